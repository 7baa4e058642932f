import pytest

from inventory.stock import InsufficientStock, Stock


def test_add_accumulates():
    stock = Stock()
    stock.add("ABC-1234", 3)
    stock.add("ABC-1234", 4)
    assert stock.on_hand("ABC-1234") == 7


def test_remove_reduces_on_hand():
    stock = Stock()
    stock.add("ABC-1234", 10)
    stock.remove("ABC-1234", 4)
    assert stock.on_hand("ABC-1234") == 6


def test_remove_more_than_on_hand_fails():
    stock = Stock()
    stock.add("ABC-1234", 2)
    with pytest.raises(InsufficientStock):
        stock.remove("ABC-1234", 5)
