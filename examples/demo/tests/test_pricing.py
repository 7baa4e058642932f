from decimal import Decimal

from inventory.pricing import add_tax, format_price, unit_price


def test_unit_price_without_discount():
    assert unit_price("4.00", 3) == Decimal("4.00")


def test_unit_price_first_bulk_tier():
    assert unit_price("10.00", 10) == Decimal("9.50")


def test_add_tax():
    assert add_tax("100.00", "0.2") == Decimal("120.00")


def test_format_price_usd():
    assert format_price("12.5") == "$12.50"
