// Reads the page with the compiled sitemap: which page type this URL is, which item a product page
// shows, which zones the page has, and what the page declares itself (data-kairos-* attributes,
// a <script type="application/kairos+json"> block). The sitemap's shape is made by engine/logic/sitemap.py.

import { parseJSON } from './util.js';

/** Drop undefined / null / empty-string fields. */
export function compact(o) {
  const r = {};
  for (const k in o) if (o[k] != null && o[k] !== '') r[k] = o[k];
  return r;
}

const qa = (doc, sel) => {
  try {
    return [...doc.querySelectorAll(sel)];
  } catch (e) {
    return []; // an invalid selector finds nothing
  }
};
const q1 = (doc, sel) => qa(doc, sel)[0];
const cat = (s) => String(s).trim().replace(/\s*[>|]\s*/g, '/');
const list = (s) => s && s.split(/\s*,\s*/);

/** The first page type (in sitemap order) with a pattern matching the path, or undefined. */
export const matchPage = (sm, path) =>
  (sm.page_types || []).find((pt) => pt.match.some((re) => new RegExp(re).test(path)));

/** "$1,299.00" -> 1299, "1.299,00 €" -> 1299, "12,5" -> 12.5; undefined when there's no number. */
export function price(v) {
  const s = String(v)
    .replace(/[^\d.,]/g, '')
    .replace(/[.,](?=\d{3}(\D|$))/g, '')
    .replace(',', '.');
  return s && !isNaN(s) ? +s : undefined;
}

const products = (n) =>
  !n || typeof n != 'object'
    ? []
    : Array.isArray(n)
      ? n.flatMap(products)
      : [].concat(n['@type']).includes('Product')
        ? [n]
        : products(n['@graph']);

/** The schema.org Product in the page's JSON-LD, as a Kairos item. */
export function itemFromJsonLd(doc) {
  const p = qa(doc, 'script[type="application/ld+json"]').flatMap((s) => products(parseJSON(s.textContent)))[0];
  if (!p) return {};
  const offer = [].concat(p.offers || {})[0];
  return compact({
    id: p.sku || p.productID,
    name: p.name,
    brand: p.brand?.name || p.brand,
    price: price(offer.price || offer.lowPrice),
    categories: p.category && [].concat(p.category).map(cat),
  });
}

/** An item from CSS selectors: fields {field: "css selector" or "css selector @attribute"}.
 * categories joins every match into one path, tags keeps every match, the rest the first. */
export function itemFromSelectors(doc, fields) {
  const it = {};
  for (const k in fields) {
    const [sel, attr] = fields[k].split(' @');
    const v = qa(doc, sel)
      .map((el) => ((attr ? el.getAttribute(attr) : el.textContent) || '').trim())
      .filter(Boolean);
    if (v.length) it[k] = k === 'price' ? price(v[0]) : k === 'categories' ? [v.map(cat).join('/')] : k === 'tags' ? v : v[0];
  }
  return compact(it);
}

/** An item from data-kairos-item-* attributes on one element ({} without an id). */
export function itemFromAttrs(el) {
  const g = (n) => el?.getAttribute('data-kairos-item-' + n);
  return g('id')
    ? compact({
        id: g('id'),
        name: g('name'),
        brand: g('brand'),
        price: price(g('price')),
        categories: list(g('categories')),
        tags: list(g('tags')),
      })
    : {};
}

/** What the page says about itself, {page_type?, item?}: the JSON block, else the attributes. */
export function pageDeclaration(doc) {
  const el = q1(doc, '[data-kairos-page-type],[data-kairos-item-id]');
  const it = itemFromAttrs(el);
  const j = parseJSON(q1(doc, 'script[type="application/kairos+json"]')?.textContent, {});
  return compact({
    page_type: j.page_type || el?.getAttribute('data-kairos-page-type'),
    item: j.item || (it.id && it),
  });
}

/** The item a page type shows, by the sitemap's rules: JSON-LD first, selectors fill and override. */
export function sitemapItem(doc, pt) {
  const spec = pt?.item;
  return spec ? { ...(spec.json_ld && itemFromJsonLd(doc)), ...itemFromSelectors(doc, spec.fields) } : {};
}

/** Zones on the page, [{zone, el}]: data-kairos-zone elements, then the page type's selectors. */
export function findZones(doc, pt) {
  const out = qa(doc, '[data-kairos-zone]').map((el) => ({ zone: el.getAttribute('data-kairos-zone'), el }));
  const z = pt?.zones || {};
  for (const zone in z) {
    const el = q1(doc, z[zone]);
    if (el && !out.some((x) => x.zone === zone)) out.push({ zone, el });
  }
  return out;
}

/** GA4 items -> Kairos items [{id, quantity, price}]. */
export const ga4Items = (a) =>
  [].concat(a || []).map((i) => compact({ id: String(i.item_id || i.id), quantity: i.quantity || 1, price: i.price }));

/** A data-layer entry -> [name, params]: {event: "purchase", ecommerce: {...}} or gtag's
 * arguments ["event", "purchase", {...}]. */
export const dataLayerEntry = (e) => ((e = Object(e))[0] === 'event' ? [e[1], e[2] || {}] : [e.event, e.ecommerce || e]);
