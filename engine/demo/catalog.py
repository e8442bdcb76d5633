"""The demo shop's catalog, built from the REES46 e-commerce sample (or a tiny built-in one).

Pure apart from :func:`load_catalog` reading the CSV once. A product gets its id, brand, price
and category path from the sample; its name is made from the brand and the category
(``computers.notebook`` + ``lenovo`` -> "Lenovo Notebook Air 7067"), since the sample has none.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MODELS = ("Air", "Pro", "Lite", "Max", "Neo", "Plus", "One", "Classic", "Go", "Studio")

#: Used when the sample file is missing, so that the demo still shows a shop.
FALLBACK_ROWS: tuple[dict[str, str], ...] = tuple(
    {"product_id": pid, "category_code": code, "brand": brand, "price": price, "event_type": "view"}
    for pid, code, brand, price in (
        ("1004856", "electronics.smartphone", "samsung", "130.76"),
        ("1005115", "electronics.smartphone", "apple", "975.57"),
        ("1004767", "electronics.smartphone", "xiaomi", "241.83"),
        ("4804056", "electronics.audio.headphone", "apple", "160.57"),
        ("4802036", "electronics.audio.headphone", "sony", "171.56"),
        ("1307067", "computers.notebook", "lenovo", "251.74"),
        ("1306894", "computers.notebook", "hp", "360.09"),
        ("3900821", "appliances.environment.water_heater", "aqua", "33.20"),
        ("3601530", "appliances.kitchen.washer", "lg", "352.55"),
        ("17200506", "furniture.living_room.sofa", "brw", "543.10"),
        ("28719074", "apparel.shoes.keds", "baden", "102.45"),
        ("12703498", "sport.bicycle", "stels", "160.31"),
    )
)


def title(word: str) -> str:
    """``water_heater`` -> ``Water heater``."""
    w = word.replace("_", " ").strip()
    return w[:1].upper() + w[1:]


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    brand: str
    price: float
    category: str  # a path: "computers/notebook"
    popularity: int = 0

    @property
    def trail(self) -> list[tuple[str, str]]:
        """[(path, label)] from the top category down to the product's own."""
        parts = self.category.split("/")
        return [("/".join(parts[: i + 1]), title(p)) for i, p in enumerate(parts)]

    @property
    def hue(self) -> int:
        """A stable colour per top category, for the placeholder pictures."""
        top = self.category.split("/")[0]
        return int(hashlib.blake2b(top.encode(), digest_size=2).hexdigest(), 16) % 360

    @property
    def kind(self) -> str:
        return title(self.category.rsplit("/", 1)[-1])


@dataclass
class Catalog:
    products: dict[str, Product]
    source: str
    fallback: bool = False
    _by_popularity: list[Product] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._by_popularity = sorted(self.products.values(), key=lambda p: (-p.popularity, p.id))

    def get(self, pid: str) -> Product | None:
        return self.products.get(pid)

    def popular(self, n: int, exclude: Iterable[str] = ()) -> list[Product]:
        skip = set(exclude)
        return [p for p in self._by_popularity if p.id not in skip][:n]

    def showcase(self, n: int) -> list[Product]:
        """The most popular product of each top category, then the next ones: a varied shelf."""
        firsts: dict[str, Product] = {}
        for p in self._by_popularity:
            firsts.setdefault(p.category.split("/")[0], p)
        picks = list(firsts.values())[:n]
        return picks + self.popular(n - len(picks), exclude=[p.id for p in picks])

    def in_category(self, path: str) -> list[Product]:
        return [p for p in self._by_popularity if p.category == path or p.category.startswith(path + "/")]

    def categories(self, parent: str = "") -> list[tuple[str, str, int]]:
        """Direct sub-categories of `parent` ("" = the top level): [(path, label, products)]."""
        depth = parent.count("/") + 1 if parent else 0
        counts: Counter[str] = Counter()
        for p in self.products.values():
            parts = p.category.split("/")
            if len(parts) > depth and (not parent or p.category.startswith(parent + "/")):
                counts["/".join(parts[: depth + 1])] += 1
        return [(c, title(c.rsplit("/", 1)[-1]), n) for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def similar(self, product: Product, n: int) -> list[Product]:
        same = [p for p in self.in_category(product.category) if p.id != product.id]
        if len(same) < n:
            top = product.category.split("/")[0]
            same += [p for p in self.in_category(top) if p.id != product.id and p not in same]
        return same[:n]

    def search(self, query: str, n: int = 48) -> list[Product]:
        words = query.lower().split()
        if not words:
            return []
        hits = [p for p in self._by_popularity
                if all(w in f"{p.name} {p.category}".lower() for w in words)]
        return hits[:n]


def build(rows: Iterable[Mapping[str, str]], source: str, fallback: bool = False) -> Catalog:
    """REES46 rows (product_id, category_code, brand, price, event_type) -> a catalog of the
    products that have a category and a brand; popularity counts views, carts and purchases."""
    latest: dict[str, Mapping[str, str]] = {}
    score: Counter[str] = Counter()
    for r in rows:
        pid = (r.get("product_id") or "").strip()
        if not pid or not r.get("category_code") or not r.get("brand"):
            continue
        latest[pid] = r
        score[pid] += {"purchase": 5, "cart": 3}.get(r.get("event_type", ""), 1)
    products = {}
    for pid, r in latest.items():
        try:
            price = round(float(r["price"]), 2)
        except (TypeError, ValueError):
            continue
        code = r["category_code"].strip().lower()
        brand = r["brand"].strip().lower()
        model = MODELS[int(pid) % len(MODELS)] if pid.isdigit() else ""
        leaf = title(code.rsplit(".", 1)[-1])
        name = " ".join(x for x in (title(brand), leaf, model, pid[-4:]) if x)
        products[pid] = Product(pid, name, title(brand), price, code.replace(".", "/"), score[pid])
    return Catalog(products, source, fallback)


def load_catalog(path: Path) -> Catalog:
    """The catalog from the REES46 CSV at `path`, or the built-in fallback when it can't be read."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            catalog = build(csv.DictReader(f), str(path))
    except OSError:
        catalog = Catalog({}, str(path))
    if not catalog.products:
        return build(FALLBACK_ROWS, f"built-in sample ({path} not found or empty)", fallback=True)
    return catalog
