"""The seed's job (Parallel Python's dynamic_ncpus.py), in Python 3.

Calculates the partial sum 1 - 1/2 + 1/3 - 1/4 + ... over x in [start, end);
in the limit it is ln(2). `outboard-bench scaling` runs it in worker
processes (the Parallel Python equivalent) and in Python threads (the GIL
baseline) beside the native kernel.
"""


def part_sum(start, end):
    """Calculates partial sum"""
    sum = 0
    for x in range(start, end):
        if x % 2 == 0:
            sum -= 1.0 / x
        else:
            sum += 1.0 / x
    return sum
