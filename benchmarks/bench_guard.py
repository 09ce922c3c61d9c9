"""Core guard figures, each as a ratio to a baseline measured in the same run.

1. Decorator overhead on the allow path, against the bare call and against a minimal
   decorator that does one dict lookup (the least any policy check could cost).
2. Evaluation (classify + evaluate) of a call that needs its arguments looked at, with
   10, 100 and 1,000 rules in the policy.
3. Types before rules: validating a call against the function's annotations and freezing
   the snapshot (paid only by calls the policy may hold), against freezing alone.
4. A synchronous call the guard must decide (its arguments matter): served by the guard's one
   long-lived event loop, against starting an event loop per call (``anyio.run``, as before).

Run: python benchmarks/bench_guard.py
"""

from __future__ import annotations

import functools
import timeit

import anyio

from agentguard import Guard, Policy, guarded, using_guard
from agentguard.engine import evaluate
from agentguard.types import ToolCall


def best_ns(fn, number: int = 200_000, repeat: int = 7) -> float:
    """Best-of-N nanoseconds per call (min is the least noisy estimate on a shared box)."""
    times = timeit.repeat(fn, number=number, repeat=repeat)
    return min(times) / number * 1e9


def bare(x: int) -> int:
    return x + 1


ALLOWED = {"bare": True}


def dict_lookup_decorator(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not ALLOWED.get(fn.__name__):
            raise PermissionError(fn.__name__)
        return fn(*args, **kwargs)

    return wrapper


def policy_with(n_rules: int) -> Policy:
    rules = [f"  - {{id: r{i}, match: {{tool: tool_{i}, args: {{env: prod}}}}, class: write}}"
             for i in range(n_rules - 2)]
    rules.append("  - {id: globbed, match: {tool: 'admin.*'}, class: privileged}")
    rules.append("  - {id: target, match: {tool: deploy, args: {env: {in: [prod, staging]}}}, "
                 "class: write}")
    return Policy.from_yaml("rules:\n" + "\n".join(rules) + "\n")


def main() -> None:
    policy = Policy.from_yaml("rules:\n  - {id: reads, match: {tool: bare_guarded}, class: read}\n")
    guard = Guard(policy)

    @guarded
    def bare_guarded(x: int) -> int:
        return x + 1

    looked_up = dict_lookup_decorator(bare)
    with using_guard(guard):
        bare_guarded(1)
        t_bare = best_ns(lambda: bare(1))
        t_dict = best_ns(lambda: looked_up(1))
        t_guard = best_ns(lambda: bare_guarded(1))
    print("allow path (decorated sync function, policy allows the tool)")
    print(f"  bare call            {t_bare:8.0f} ns   1.00x")
    print(f"  dict-lookup wrapper  {t_dict:8.0f} ns   {t_dict / t_bare:5.2f}x bare")
    print(f"  @guarded             {t_guard:8.0f} ns   {t_guard / t_bare:5.2f}x bare, "
          f"{t_guard / t_dict:5.2f}x dict-lookup wrapper")
    print(f"  overhead over bare   {(t_guard - t_bare) / 1000:8.3f} us per call (target < 5 us)")

    print("\nevaluation (classify + evaluate a call whose arguments decide)")
    call = ToolCall(tool="deploy", args={"env": "prod", "service": "api"})
    figures = {}
    for n in (10, 100, 1000):
        p = policy_with(n)
        assert evaluate(p.model, p.classify(call), {}).decision.rule_id == "target"
        figures[n] = best_ns(lambda p=p: evaluate(p.model, p.classify(call), {}),
                             number=20_000)
    for n, t in figures.items():
        print(f"  {n:5d} rules  {t / 1000:8.2f} us   {t / figures[10]:5.2f}x the 10-rule figure")
    spread = max(figures.values()) / min(figures.values())
    print(f"  spread 10 -> 1000 rules: {spread:.2f}x (target within 2x)")

    from agentguard.canonical import freeze
    from agentguard.validation import FunctionArguments, JsonSchemaArguments

    def deploy(env: str, service: str, replicas: int = 1, force: bool = False) -> None:
        return None

    args = {"env": "prod", "service": "api", "replicas": 3, "force": False}
    by_function = FunctionArguments(deploy)
    by_model = FunctionArguments(deploy, json=True)
    by_schema = JsonSchemaArguments({"type": "object", "properties": {
        "env": {"type": "string"}, "service": {"type": "string"},
        "replicas": {"type": "integer"}, "force": {"type": "boolean"}},
        "required": ["env", "service"]})
    t_freeze = best_ns(lambda: freeze(args), number=20_000)
    print("\nvalidation and snapshot per call the policy may hold (4 arguments)")
    print(f"  freeze only                   {t_freeze / 1000:8.2f} us")
    for label, validator in (("annotations (@guarded)", by_function),
                             ("annotations, strict JSON", by_model),
                             ("JSON Schema (MCP inputSchema)", by_schema)):
        t = best_ns(lambda v=validator: v.validate(args), number=20_000)
        print(f"  {label:29s} {t / 1000:8.2f} us   {t / t_freeze:5.2f}x freeze")

    decided = Guard(Policy.from_yaml(
        "rules:\n  - {id: prod, match: {tool: deploy, args: {env: prod}}, class: destructive}\n"
        "  - {id: rest, match: {tool: deploy}, class: read}\n"))
    staging = ToolCall(tool="deploy", args={"env": "staging"})
    assert decided.authorize_sync(staging).allowed
    t_portal = best_ns(lambda: decided.authorize_sync(staging), number=300)
    t_run = best_ns(lambda: anyio.run(decided.authorize, staging), number=300)
    decided.close_sync()
    print("\nsynchronous call the guard decides (allowed after looking at its arguments)")
    print(f"  event loop per call (anyio.run)  {t_run / 1000:8.1f} us")
    print(f"  the guard's portal loop          {t_portal / 1000:8.1f} us   "
          f"{t_portal / t_run:5.2f}x anyio.run")


if __name__ == "__main__":
    main()
