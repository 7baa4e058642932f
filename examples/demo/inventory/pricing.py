"""Prices for order lines: bulk discount tiers, tax and display formatting."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# (minimum quantity, discount rate), highest threshold first.
BULK_TIERS = (
    (100, Decimal("0.15")),
    (50, Decimal("0.10")),
    (10, Decimal("0.05")),
)

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}

CENT = Decimal("0.01")


def to_decimal(value):
    """A Decimal from an int, a numeric string or a float (via its shortest repr)."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, float):
        value = repr(value)
    try:
        result = Decimal(value)
    except (InvalidOperation, TypeError):
        raise ValueError(f"not a number: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def discount_rate(quantity):
    """The bulk discount for ordering `quantity` units."""
    if quantity < 0:
        raise ValueError(f"quantity cannot be negative: {quantity}")
    for threshold, rate in BULK_TIERS:
        if quantity >= threshold:
            return rate
    return Decimal("0")


def unit_price(base_price, quantity):
    """The discounted price of one unit, rounded half-up to the cent."""
    base = to_decimal(base_price)
    if base < 0:
        raise ValueError(f"base price cannot be negative: {base}")
    rate = discount_rate(quantity)
    return (base * (1 - rate)).quantize(CENT, rounding=ROUND_HALF_UP)


def line_total(base_price, quantity):
    """Discounted unit price times quantity (a whole number of units)."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise TypeError(f"quantity must be an int, got {type(quantity).__name__}")
    return unit_price(base_price, quantity) * quantity


def add_tax(amount, rate):
    """`amount` plus tax at `rate` (0.2 for 20%), rounded half-up to the cent."""
    amount = to_decimal(amount)
    rate = to_decimal(rate)
    if not 0 <= rate < 1:
        raise ValueError(f"tax rate must be in [0, 1): {rate}")
    return (amount * (1 + rate)).quantize(CENT, rounding=ROUND_HALF_UP)


def format_price(amount, currency="USD"):
    """`1234.5` -> `$1,234.50`; negative amounts get a leading minus: `-€3.00`."""
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    if symbol is None:
        raise ValueError(f"unknown currency: {currency}")
    value = to_decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)
    sign = "-" if value < 0 else ""
    return f"{sign}{symbol}{abs(value):,.2f}"
