"""Parsing SKUs ("ABC-1234-XL") and order lines ("ABC-1234-XL, 3, 19.99")."""

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import List, Optional

SIZES = ("XS", "S", "M", "L", "XL", "XXL")

_SKU_RE = re.compile(r"^([A-Z]{3})-(\d{4})(?:-([A-Z]{1,3}))?$")


class ParseError(ValueError):
    """Bad input, with the line number when parsing a whole order."""

    def __init__(self, message, line_no=None):
        if line_no is not None:
            message = f"line {line_no}: {message}"
        super().__init__(message)
        self.line_no = line_no


@dataclass(frozen=True)
class Sku:
    category: str
    number: int
    size: Optional[str] = None

    def __str__(self):
        base = f"{self.category}-{self.number:04d}"
        return f"{base}-{self.size}" if self.size else base


@dataclass(frozen=True)
class OrderLine:
    sku: Sku
    quantity: int
    unit_price: Decimal


def parse_sku(text):
    """`"abc-0042-xl "` -> `Sku("ABC", 42, "XL")`; case and surrounding spaces are ignored."""
    if not isinstance(text, str):
        raise ParseError(f"SKU must be a string, got {type(text).__name__}")
    cleaned = text.strip().upper()
    if not cleaned:
        raise ParseError("empty SKU")
    match = _SKU_RE.match(cleaned)
    if match is None:
        raise ParseError(f"malformed SKU {text!r} (expected like ABC-1234 or ABC-1234-XL)")
    category, number, size = match.groups()
    if size is not None and size not in SIZES:
        raise ParseError(f"unknown size {size!r} in SKU {cleaned}")
    return Sku(category, int(number), size)


def parse_order_line(line, line_no=None):
    """`"SKU, quantity, unit price"` -> OrderLine."""
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != 3:
        raise ParseError(f"expected 3 fields (sku, quantity, price), got {len(parts)}", line_no)
    try:
        sku = parse_sku(parts[0])
    except ParseError as exc:
        raise ParseError(str(exc), line_no) from None
    try:
        quantity = int(parts[1])
    except ValueError:
        raise ParseError(f"quantity is not a whole number: {parts[1]!r}", line_no) from None
    if quantity <= 0:
        raise ParseError(f"quantity must be positive, got {quantity}", line_no)
    try:
        price = Decimal(parts[2])
    except InvalidOperation:
        raise ParseError(f"price is not a number: {parts[2]!r}", line_no) from None
    if not price.is_finite() or price < 0:
        raise ParseError(f"price must be a non-negative amount, got {parts[2]!r}", line_no)
    return OrderLine(sku, quantity, price)


def parse_order(text) -> List[OrderLine]:
    """One order line per line; blank lines and `#` comments are skipped."""
    lines = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        lines.append(parse_order_line(stripped, line_no))
    return lines
