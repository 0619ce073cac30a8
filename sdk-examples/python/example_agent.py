"""An example agent in Python: each run plans, calls an LLM and a tool as nested spans,
records metrics, and every few runs the tool fails and takes the run down with it.

Written the way agent code is: `runlens.span()` and `@runlens.traced` nest implicitly under
the enclosing run, with no span objects passed around.

Usage: example_agent.py [--endpoint HOST:PORT] [--runs N] [--fail-every K] [--step-ms MS]
"""

import argparse
import os
import sys
import time

import runlens


class ToolError(Exception):
    """The tool call failed."""


@runlens.traced("tool_call", tool="search")
def search(step: float, fails: bool) -> str:
    time.sleep(step)
    if fails:
        runlens.event("retry", attempt=1)
        raise ToolError("search timed out after 1 retry")
    return "found"


def answer(task: int, step: float, fails: bool) -> None:
    with runlens.span("plan"):
        time.sleep(step)
        # Check resources right before the heavy step.
        with runlens.span("llm_call", fresh_snapshot=True, model="example-7b"):
            time.sleep(step * 2)
            runlens.metric("gen_ai.usage.input_tokens", 200 + task, unit="{token}")
            runlens.metric("gen_ai.usage.output_tokens", 50 + 3 * task, unit="{token}")
        search(step, fails)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default=os.environ.get("RUNLENS_ENDPOINT", "127.0.0.1:50551"),
                   help="the sidecar, host:port (default $RUNLENS_ENDPOINT or 127.0.0.1:50551)")
    p.add_argument("--runs", type=int, default=5, help="how many runs to record")
    p.add_argument("--fail-every", type=int, default=3, help="every n-th run fails (0 = never)")
    p.add_argument("--step-ms", type=float, default=5, help="simulated work per step")
    args = p.parse_args()

    client = runlens.configure(args.endpoint, name="example-agent-py")
    step = args.step_ms / 1000
    failed = 0
    for i in range(1, args.runs + 1):
        fails = args.fail_every > 0 and i % args.fail_every == 0
        try:
            with runlens.run("answer-question", task=i):
                answer(i, step, fails)
                runlens.metric("agent.steps", 3, unit="{step}")
        except ToolError:
            failed += 1
    if not runlens.flush(timeout=30):
        print(f"example_agent: {client.unacknowledged} message(s) not acknowledged "
              f"({client.last_error})", file=sys.stderr)
        return 1
    print(f"example_agent: {args.runs} runs ({args.runs - failed} ok, {failed} failed), "
          f"{args.runs * 3} spans; all acknowledged by {args.endpoint}")
    if client.dropped or client.rejected:
        print(f"example_agent: {client.dropped} dropped, {client.rejected} rejected "
              f"({client.last_error})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
