"""Plans: free allowances on the user's own cycle, rate overrides, features.

::

    plans/cycle.py        the periods: the user's cycle, calendar windows
    plans/models.py       Plan, FeatureLimit, UserPlan, FeatureCheck
    plans/definitions.py  plans from set_plan and from a price book's plans
    plans/cache.py        what a manager keeps of them between calls
    plans/holders.py      whose hold a lease id is (settle/extend by id)

The operations are :class:`spendgate.ops.plans.Plans` and
:class:`spendgate.ops.features.Features`.
"""
