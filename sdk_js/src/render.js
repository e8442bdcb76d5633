// Rendering of decisions inside Shadow DOM, so page styles don't reach in and ours don't leak out.
// The server's templates already sanitise content.html (nh3, engine/logic/decisions/templates.py);
// clean() is a second line of defence with the same allow-list: tags and attributes it knows, URLs
// http(s), mailto or on this host (never //host); anything else is dropped. Titles are text.

// The popup is a native modal <dialog> (top layer, the page behind it inert, Esc); the look comes
// with the server's template html. Nothing here is borrowed by content: no class or role styles.
const CSS =
  '<style>:host{all:initial;display:block}a{color:inherit}img{max-width:100%}dialog{padding:0;border:0}dialog>div{padding:1em}' +
  'dialog::backdrop{background:#0008}.x{float:right}</style>';
const FOCUSABLE = 'a[href],button,input';
// the allow-list (engine/logic/decisions/templates.py TAGS, ATTRIBUTES, url_allowed)
const TAGS = /^([abipsu]|em|strong|small|[bh]r|div|span|h[1-6]|[uo]l|li|img|button|form|input|label)$/;
const ATTRS = /^(class|title|href|src|alt|type|name|placeholder|required|value|(data|aria)-.+)$/;
// what a URL may start with, once stripped of the control characters browsers ignore
const URL_OK = /^(https?:|mailto:|[#?]|\/(?![/\\])|[^:/\\][^:]*$)/i;

export function clean(doc, html) {
  const t = doc.createElement('template');
  t.innerHTML = html ?? '';
  for (const n of t.content.querySelectorAll('*'))
    if (!TAGS.test(n.localName)) n.remove();
    else
      for (const { name, value } of [...n.attributes])
        if (!ATTRS.test(name) || (/^(href|src)$/.test(name) && !URL_OK.test(value.replace(/[\0- ]/g, ''))))
          n.removeAttribute(name);
  return t.content;
}

/** The host's (open) shadow root, filled with our base style and `html`. */
function shadow(host, html) {
  const r = host.shadowRoot || host.attachShadow({ mode: 'open' });
  r.innerHTML = CSS + html;
  return r;
}

/** Report clicks on links and buttons inside `root` (not the close button). A form never
 * submits the page (its action was stripped: it would reload the page with its fields). */
function onClicks(root, report) {
  root.addEventListener('submit', (e) => e.preventDefault());
  root.addEventListener('click', (e) => {
    const el = e.target.closest('a,button');
    if (el && el.className !== 'x') report('click', { href: el.getAttribute('href') || undefined });
  });
}

/** Fill `box` with the decision's title (as text) and its cleaned html. */
function fill(box, d, title) {
  box.querySelector('h2').textContent = d.content.title || title;
  box.append(clean(box.ownerDocument, d.content.html));
}

/** Render one (non-control) decision into a zone element. `report(type, props)` sends events. */
export function renderZone(host, d, report) {
  const root = shadow(host, '<div part=content><h2></h2></div>');
  const box = root.lastChild;
  fill(box, d, '');
  if (!d.content.title) box.firstChild.remove();
  onClicks(root, report);
  return root;
}

/**
 * Show an accessible modal popup: a native modal <dialog> (the page behind it inert, focus kept
 * inside), labelled by its title, focus moved in; Esc / close button / backdrop dismiss, focus
 * returned. An email form inside calls onEmail(email). Returns its shadow root.
 */
export function showPopup(doc, d, report, onEmail) {
  const prev = doc.activeElement;
  const host = doc.body.appendChild(doc.createElement('div'));
  host.setAttribute('data-kairos-popup', d.zone);
  // (the close button is in no form, so it needs no type=button)
  const root = shadow(
    host,
    '<dialog part=dialog aria-labelledby=t><div><button class=x part=close aria-label=Close>\u00d7</button><h2 id=t></h2></div></dialog>',
  );
  const dlg = root.lastChild;
  const box = dlg.firstChild;
  const x = box.firstChild;
  fill(box, d, 'Offer');
  onClicks(root, report);

  const close = (why) => {
    if (!host.parentNode) return;
    host.remove();
    report('dismiss', { via: why });
    if (prev) prev.focus();
  };
  dlg.onclose = () => close('esc'); // only Esc (a close request) closes it natively
  dlg.onclick = (e) => e.target == dlg && close('backdrop'); // the ::backdrop: the dialog itself
  x.onclick = () => close('close');
  dlg.addEventListener('submit', (e) => {
    const form = e.target;
    const email = form.querySelector('input[type=email]');
    if (!email) return;
    if (!/^[^\s@]+@[^\s@]+$/.test(email.value.trim())) return;
    onEmail(email.value.trim());
    form.replaceWith(form.getAttribute('data-kairos-thanks') || 'Thank you!');
  });
  dlg.showModal();
  (box.querySelectorAll(FOCUSABLE)[1] || x).focus();
  return root;
}
