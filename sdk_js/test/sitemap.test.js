// Reading the page with the compiled sitemap (the shape engine/logic/sitemap.py serves).
import { describe, it, expect, beforeEach } from 'vitest';
import * as S from '../src/sitemap.js';

const SM = {
  version: 1,
  page_types: [
    { name: 'home', kind: 'home', match: ['^/$'], zones: { home_hero: '#hero' } },
    {
      name: 'product',
      kind: 'product',
      match: ['^/p/[^/]+/?$'],
      item: {
        json_ld: true,
        fields: {
          id: '[data-product-id] @data-product-id',
          price: '.price',
          categories: 'nav a',
          tags: '.tag',
        },
      },
      zones: { pdp_recs: '#recs', missing: '#nope' },
    },
    { name: 'search', kind: 'search', match: ['^/search/?$'], query_param: 'q', zones: {} },
  ],
};

beforeEach(() => {
  document.body.innerHTML = '';
  document.head.innerHTML = '';
});

describe('matchPage', () => {
  it('takes the first page type whose pattern matches the path', () => {
    expect(S.matchPage(SM, '/').name).toBe('home');
    expect(S.matchPage(SM, '/p/sku-1').name).toBe('product');
    expect(S.matchPage(SM, '/search').name).toBe('search');
    expect(S.matchPage(SM, '/about')).toBe(undefined);
    expect(S.matchPage({}, '/')).toBe(undefined);
  });
});

describe('price', () => {
  it.each([
    ['$12.50', 12.5],
    ['1,299.00 USD', 1299],
    ['1.299,00 €', 1299],
    ['12,5', 12.5],
    ['49', 49],
    [19.9, 19.9],
    ['free', undefined],
    [undefined, undefined],
  ])('%s -> %s', (v, want) => expect(S.price(v)).toBe(want));
});

describe('items', () => {
  it('reads a schema.org Product from JSON-LD (also inside @graph)', () => {
    document.head.innerHTML =
      '<script type="application/ld+json">{"@type":"Organization","name":"Shop"}</script>' +
      '<script type="application/ld+json">not json</script>' +
      '<script type="application/ld+json">{"@graph":[{"@type":["Product"],"sku":"SKU-9","name":"Runner",' +
      '"brand":{"@type":"Brand","name":"Fleet"},"category":"Shoes > Running",' +
      '"offers":[{"@type":"Offer","price":"89.90","priceCurrency":"EUR"}]}]}</script>';
    expect(S.itemFromJsonLd(document)).toEqual({
      id: 'SKU-9',
      name: 'Runner',
      brand: 'Fleet',
      price: 89.9,
      categories: ['Shoes/Running'],
    });
  });

  it('reads fields with CSS selectors: text, attributes, all matches', () => {
    document.body.innerHTML =
      '<div data-product-id="p-1"></div><span class="price"> $1,049.00 </span>' +
      '<nav><a>Shoes</a><a>Running</a></nav><i class="tag">new</i><i class="tag">sale</i>';
    expect(S.itemFromSelectors(document, SM.page_types[1].item.fields)).toEqual({
      id: 'p-1',
      price: 1049,
      categories: ['Shoes/Running'],
      tags: ['new', 'sale'],
    });
  });

  it('lets selectors fill and override JSON-LD; nothing for pages without item rules', () => {
    document.head.innerHTML = '<script type="application/ld+json">{"@type":"Product","sku":"A","name":"N"}</script>';
    document.body.innerHTML = '<div data-product-id="B"></div>';
    expect(S.sitemapItem(document, SM.page_types[1])).toEqual({ id: 'B', name: 'N' });
    expect(S.sitemapItem(document, SM.page_types[0])).toEqual({});
    expect(S.sitemapItem(document, undefined)).toEqual({});
  });

  it('reads data-kairos-item-* attributes', () => {
    document.body.innerHTML =
      '<article data-kairos-item-id="s1" data-kairos-item-price="9.99" data-kairos-item-categories="shoes/running, sale" data-kairos-item-brand="Fleet"></article>';
    expect(S.itemFromAttrs(document.querySelector('article'))).toEqual({
      id: 's1',
      price: 9.99,
      categories: ['shoes/running', 'sale'],
      brand: 'Fleet',
    });
    expect(S.itemFromAttrs(document.body)).toEqual({});
  });
});

describe('pageDeclaration', () => {
  it('reads data-kairos-* attributes', () => {
    document.body.innerHTML = '<main data-kairos-page-type="product" data-kairos-item-id="s1" data-kairos-item-name="Shoe"></main>';
    expect(S.pageDeclaration(document)).toEqual({ page_type: 'product', item: { id: 's1', name: 'Shoe' } });
  });
  it('prefers the JSON block', () => {
    document.body.innerHTML =
      '<main data-kairos-page-type="category"></main>' +
      '<script type="application/kairos+json">{"page_type":"product","item":{"id":"j1","price":5}}</script>';
    expect(S.pageDeclaration(document)).toEqual({ page_type: 'product', item: { id: 'j1', price: 5 } });
  });
  it('is empty on a page that declares nothing', () => {
    expect(S.pageDeclaration(document)).toEqual({});
  });
});

describe('findZones', () => {
  it('finds data-kairos-zone elements and the page type zones present on the page', () => {
    document.body.innerHTML = '<div data-kairos-zone="banner"></div><div id="recs"></div><div data-kairos-zone="pdp_recs" id="x"></div>';
    const z = S.findZones(document, SM.page_types[1]);
    expect(z.map((x) => [x.zone, x.el.id])).toEqual([
      ['banner', ''],
      ['pdp_recs', 'x'], // the explicit attribute wins over the sitemap's selector
    ]);
    expect(S.findZones(document, undefined).length).toBe(2);
  });
});

describe('data layer', () => {
  it('understands GA4 pushes and gtag arguments', () => {
    const ecommerce = { transaction_id: 'T1', items: [{ item_id: 'a', quantity: 2, price: 5 }] };
    expect(S.dataLayerEntry({ event: 'purchase', ecommerce })).toEqual(['purchase', ecommerce]);
    expect(S.dataLayerEntry(['event', 'add_to_cart', { items: [] }])).toEqual(['add_to_cart', { items: [] }]);
    expect(S.dataLayerEntry(null)[0]).toBe(undefined);
    expect(S.ga4Items(ecommerce.items)).toEqual([{ id: 'a', quantity: 2, price: 5 }]);
    expect(S.ga4Items([{ item_id: 7 }])).toEqual([{ id: '7', quantity: 1 }]);
  });
});
