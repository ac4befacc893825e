"""query: Datalog and pull over an abstract datom source (index seeks).

Will hold the parser (EDN or Python data into frozen dataclasses), the planner and the
hash-join evaluator, rules, aggregates, pull and the entity API (issue 4). Knows nothing of
commits, branches or stores.
"""
