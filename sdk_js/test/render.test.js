// Rendering inside Shadow DOM, escaping and sanitising, the accessible popup.
import { describe, it, expect, vi, beforeEach } from 'vitest';
import { clean, renderZone, showPopup } from '../src/render.js';

beforeEach(() => {
  document.body.innerHTML = '';
});

const decision = (over = {}) => ({
  zone: 'home_hero',
  decision_id: 'd1',
  campaign: 'spring',
  variant: 'B',
  control: false,
  content: { html: '<p class="msg">Hello <a href="/sale">sale</a></p>', title: 'Spring sale' },
  ...over,
});

const html = (frag) => {
  const d = document.createElement('div');
  d.append(frag);
  return d.innerHTML;
};

describe('clean', () => {
  it('keeps only the tags and attributes it knows, and safe URLs', () => {
    const out = html(
      clean(
        document,
        '<p onclick="x()" class="a" style="position:fixed">hi<script>alert(1)</script></p>' +
          '<iframe src="https://x"></iframe><img src=x onerror="alert(1)">' +
          '<a href=" java\tscript:alert(1)">j</a><a href="/ok" title="t">ok</a>' +
          '<form action="https://evil.example" data-kairos-form="email"><input type=email name=e formaction=/x></form>' +
          '<style>p{color:red}</style><link rel=stylesheet href=/x.css><meta http-equiv=refresh content=0>' +
          '<svg><animate attributeName=href to=javascript:alert(1) /><a href=javascript:alert(2)>s</a></svg>' +
          '<a href="//evil.example">p</a><a href="/\\evil.example">q</a><a href="/\t/evil.example">r</a>' +
          '<a href="https://ok.example/x" target=_top>h</a><a href="mailto:a@b.c">m</a><a href="data:text/html,x">d</a>',
      ),
    );
    expect(out).toBe(
      '<p class="a">hi</p><img src="x"><a>j</a><a href="/ok" title="t">ok</a>' +
        '<form data-kairos-form="email"><input type="email" name="e"></form>' +
        '<a>p</a><a>q</a><a>r</a><a href="https://ok.example/x">h</a><a href="mailto:a@b.c">m</a><a>d</a>',
    );
  });
  it('accepts missing html', () => {
    expect(html(clean(document, undefined))).toBe('');
  });
});

describe('renderZone', () => {
  it('renders into an open shadow root: page styles do not leak in, ours do not leak out', () => {
    const host = document.body.appendChild(document.createElement('div'));
    host.setAttribute('data-kairos-zone', 'home_hero');
    renderZone(host, decision(), () => {});
    expect(host.innerHTML).toBe(''); // nothing in the light DOM
    const root = host.shadowRoot;
    expect(root.querySelector('style').textContent).toContain(':host{all:initial');
    expect(root.querySelector('h2').textContent).toBe('Spring sale');
    expect(root.querySelector('.msg').textContent).toBe('Hello sale');
    expect(document.querySelector('.msg')).toBe(null);
  });

  it('sets the title as text, never as html', () => {
    const host = document.body.appendChild(document.createElement('div'));
    renderZone(host, decision({ content: { html: '', title: '<img src=x onerror=alert(1)>' } }), () => {});
    const h2 = host.shadowRoot.querySelector('h2');
    expect(h2.textContent).toBe('<img src=x onerror=alert(1)>');
    expect(h2.querySelector('img')).toBe(null);
  });

  it('renders without a title, and re-renders in place', () => {
    const host = document.body.appendChild(document.createElement('div'));
    renderZone(host, decision(), () => {});
    renderZone(host, decision({ content: { html: '<b>2</b>' } }), () => {});
    expect(host.shadowRoot.querySelector('h2')).toBe(null);
    expect(host.shadowRoot.querySelectorAll('b').length).toBe(1);
    expect(host.shadowRoot.querySelector('.msg')).toBe(null);
  });

  it('reports clicks on links and buttons', () => {
    const host = document.body.appendChild(document.createElement('div'));
    const report = vi.fn();
    renderZone(host, decision(), report);
    host.shadowRoot.addEventListener('click', (e) => e.preventDefault()); // no navigation in jsdom
    host.shadowRoot.querySelector('a').dispatchEvent(new MouseEvent('click', { bubbles: true, composed: true, cancelable: true }));
    host.shadowRoot.querySelector('.msg').click(); // not a link
    expect(report.mock.calls).toEqual([['click', { href: '/sale' }]]);
  });
});

describe('showPopup', () => {
  // jsdom has no <dialog> behaviour: showModal opens it; Esc closes it (the `close` event)
  beforeEach(() => {
    HTMLDialogElement.prototype.showModal = function () {
      this.setAttribute('open', '');
    };
  });
  const content = {
    title: 'Wait!',
    html: '<p>10% off</p><form data-kairos-thanks="Check your inbox"><input type="email" name="email"><button type="submit">Send</button></form>',
  };
  const open = (report = vi.fn(), onEmail = vi.fn()) => {
    const before = document.body.appendChild(document.createElement('button'));
    before.textContent = 'page button';
    before.focus();
    const p = showPopup(document, decision({ zone: 'exit_intent', content }), report, onEmail);
    return { p, before, report, onEmail, root: p, dialog: p.querySelector('dialog') };
  };
  const esc = (root) => root.querySelector('dialog')?.dispatchEvent(new Event('close'));

  it('is an accessible modal dialog, labelled by its title, with focus moved in', () => {
    const { dialog, root } = open();
    expect(dialog.hasAttribute('open')).toBe(true); // shown with showModal()
    const label = root.getElementById(dialog.getAttribute('aria-labelledby'));
    expect(label.textContent).toBe('Wait!');
    expect(root.activeElement).toBe(root.querySelector('input[type=email]'));
    expect(root.querySelector('.x').getAttribute('aria-label')).toBe('Close');
  });

  it('Esc dismisses, reports it and returns focus', () => {
    const { before, report, root } = open();
    const dialog = root.querySelector('dialog');
    esc(root);
    expect(document.querySelector('[data-kairos-popup]')).toBe(null);
    expect(report).toHaveBeenCalledWith('dismiss', { via: 'esc' });
    expect(document.activeElement).toBe(before);
    dialog.dispatchEvent(new Event('close')); // a second Esc does nothing
    expect(report).toHaveBeenCalledTimes(1);
  });

  it('the close button and the backdrop dismiss', () => {
    const a = open();
    a.root.querySelector('.x').click();
    expect(a.report.mock.calls).toEqual([['dismiss', { via: 'close' }]]);
    const b = open();
    b.root.querySelector('h2').click(); // inside: nothing
    b.root.querySelector('dialog').click(); // what a click on the ::backdrop targets
    expect(b.report.mock.calls).toEqual([['dismiss', { via: 'backdrop' }]]);
  });

  it('the email form hands the address over and thanks the visitor', () => {
    const { root, onEmail } = open();
    const input = root.querySelector('input[type=email]');
    const form = root.querySelector('form');
    input.value = 'not an email';
    form.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    expect(onEmail).not.toHaveBeenCalled();
    input.value = ' ada@example.com ';
    const ev = new Event('submit', { bubbles: true, cancelable: true });
    form.dispatchEvent(ev);
    expect(ev.defaultPrevented).toBe(true);
    expect(onEmail).toHaveBeenCalledWith('ada@example.com');
    expect(root.querySelector('form')).toBe(null);
    expect(root.querySelector('dialog').textContent).toContain('Check your inbox');
  });

  it('has a label even without a title', () => {
    const p = showPopup(document, decision({ content: { html: '<p>x</p>' } }), () => {}, () => {});
    expect(p.getElementById('t').textContent).toBe('Offer');
    expect(p.activeElement).toBe(p.querySelector('.x'));
  });
});
