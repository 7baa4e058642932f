# inventory: a small demo package for `improve demo`.
# Import the modules directly, e.g. `from inventory.pricing import unit_price`.
