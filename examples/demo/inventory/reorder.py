"""When to reorder and how much: reorder point, safety stock and economic order quantity."""

import math


def _non_negative(name, value):
    if value < 0:
        raise ValueError(f"{name} cannot be negative: {value}")


def _ceil(value):
    # Round away float noise first (0.1 * 30 is 3.0000000000000004, not more than 3).
    return math.ceil(round(value, 9))


def safety_stock(demand_std_dev, lead_time_days, service_factor=1.65):
    """Units kept back against demand swings: z * sigma * sqrt(lead time), rounded up."""
    _non_negative("demand_std_dev", demand_std_dev)
    _non_negative("lead_time_days", lead_time_days)
    _non_negative("service_factor", service_factor)
    return _ceil(service_factor * demand_std_dev * math.sqrt(lead_time_days))


def reorder_point(daily_demand, lead_time_days, safety=0):
    """The stock level at which to order: demand over the lead time plus safety stock."""
    _non_negative("daily_demand", daily_demand)
    _non_negative("lead_time_days", lead_time_days)
    _non_negative("safety", safety)
    return _ceil(daily_demand * lead_time_days + safety)


def economic_order_quantity(annual_demand, order_cost, holding_cost):
    """Wilson's EOQ, sqrt(2 * D * S / H), rounded up; 0 when there is no demand."""
    _non_negative("annual_demand", annual_demand)
    _non_negative("order_cost", order_cost)
    if holding_cost <= 0:
        raise ValueError(f"holding_cost must be positive: {holding_cost}")
    if annual_demand == 0 or order_cost == 0:
        return 0
    return _ceil(math.sqrt(2 * annual_demand * order_cost / holding_cost))


def needs_reorder(on_hand, on_order, point):
    """True when what we have plus what is coming is at or below the reorder point."""
    return on_hand + on_order <= point


def suggest_order(on_hand, on_order, daily_demand, lead_time_days, order_cost, holding_cost, safety=0):
    """How many units to order now: 0 if above the reorder point, else at least the EOQ and
    at least enough to get back above the reorder point."""
    point = reorder_point(daily_demand, lead_time_days, safety)
    if point == 0:
        return 0  # no demand over the lead time and no safety stock: nothing is needed
    if not needs_reorder(on_hand, on_order, point):
        return 0
    eoq = economic_order_quantity(daily_demand * 365, order_cost, holding_cost)
    shortfall = point - (on_hand + on_order) + 1
    return max(eoq, shortfall)
