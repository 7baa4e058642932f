"""In-memory stock levels with reservations and low-stock detection."""


class InsufficientStock(ValueError):
    """Asked for more units than are available (on hand minus reserved)."""

    def __init__(self, sku, requested, available):
        super().__init__(f"cannot take {requested} of {sku}: only {available} available")
        self.sku = sku
        self.requested = requested
        self.available = available


def _check_quantity(quantity):
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise ValueError(f"quantity must be a positive integer, got {quantity!r}")


class Stock:
    """Units on hand per SKU; reserved units stay on hand but cannot be removed."""

    def __init__(self, low_threshold=5):
        if low_threshold < 0:
            raise ValueError(f"low_threshold cannot be negative: {low_threshold}")
        self.low_threshold = low_threshold
        self._on_hand = {}
        self._reserved = {}

    def add(self, sku, quantity):
        _check_quantity(quantity)
        self._on_hand[sku] = self._on_hand.get(sku, 0) + quantity

    def on_hand(self, sku):
        return self._on_hand.get(sku, 0)

    def reserved(self, sku):
        return self._reserved.get(sku, 0)

    def available(self, sku):
        return self.on_hand(sku) - self.reserved(sku)

    def _require_known(self, sku):
        if sku not in self._on_hand:
            raise KeyError(f"unknown item: {sku}")

    def remove(self, sku, quantity):
        _check_quantity(quantity)
        self._require_known(sku)
        if quantity > self.available(sku):
            raise InsufficientStock(sku, quantity, self.available(sku))
        self._on_hand[sku] -= quantity

    def reserve(self, sku, quantity):
        _check_quantity(quantity)
        self._require_known(sku)
        if quantity > self.available(sku):
            raise InsufficientStock(sku, quantity, self.available(sku))
        self._reserved[sku] = self.reserved(sku) + quantity

    def release(self, sku, quantity):
        _check_quantity(quantity)
        if quantity > self.reserved(sku):
            raise ValueError(f"cannot release {quantity} of {sku}: only {self.reserved(sku)} reserved")
        self._reserved[sku] -= quantity
        if self._reserved[sku] == 0:
            del self._reserved[sku]

    def is_low(self, sku):
        """At or below the threshold counts as low."""
        return self.available(sku) <= self.low_threshold

    def low_stock(self):
        """The SKUs that are low, sorted."""
        return sorted(sku for sku in self._on_hand if self.is_low(sku))
