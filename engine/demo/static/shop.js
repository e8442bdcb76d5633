// Kairos Market's own script (not Kairos): a cart in a first-party cookie, "id.qty_id.qty".
// Kairos learns about add-to-cart clicks from the sitemap's click rule, not from this file.
(function () {
  var NAME = 'kdemo_cart';

  function read() {
    var m = document.cookie.match(/(?:^|; )kdemo_cart=([^;]*)/);
    var cart = {};
    (m ? m[1] : '').split('_').forEach(function (part) {
      var p = part.split('.');
      if (p[0]) cart[p[0]] = +p[1] || 1;
    });
    return cart;
  }

  function write(cart) {
    var v = Object.keys(cart).map(function (id) { return id + '.' + cart[id]; }).join('_');
    document.cookie = NAME + '=' + v + '; path=/demo; max-age=' + (v ? 604800 : 0) + '; SameSite=Lax';
    var n = Object.keys(cart).reduce(function (s, id) { return s + cart[id]; }, 0);
    var badge = document.querySelector('[data-cart-count]');
    if (badge) badge.textContent = n;
  }

  function toast(text) {
    var t = document.querySelector('.toast');
    if (!t) return;
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.hidden = true; }, 2200);
  }

  // the privacy banner (?consent=ask) is shown until the visitor has chosen
  var banner = document.querySelector('[data-consent-banner]');
  try {
    if (banner && localStorage.getItem('kairos_consent') != null) banner.remove();
  } catch (e) { /* storage blocked */ }

  document.addEventListener('click', function (e) {
    var add = e.target.closest('button.add-to-cart');
    if (add) {
      var host = add.closest('[data-product-id]');
      if (!host) return;
      var cart = read();
      var id = host.getAttribute('data-product-id');
      cart[id] = (cart[id] || 0) + 1;
      write(cart);
      add.classList.add('added');
      add.textContent = 'Added ✓';
      setTimeout(function () { add.classList.remove('added'); add.textContent = 'Add to cart'; }, 1500);
      var name = document.querySelector('h1.product-name');
      toast((name ? name.textContent : 'Item') + ' added to your cart');
    }
    var choice = e.target.closest('[data-consent]');
    if (choice) {
      // the privacy banner (shown with ?consent=ask): Kairos stores and sends nothing before this
      window.kairos('consent', choice.getAttribute('data-consent') === 'yes');
      choice.closest('[data-consent-banner]').remove();
    }
    var rm = e.target.closest('button.remove-line');
    if (rm) {
      var c = read();
      delete c[rm.getAttribute('data-remove')];
      write(c);
      location.reload();
    }
  });
})();
