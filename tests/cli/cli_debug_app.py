"""Local code for the debugger test: ``hello`` as in ``cli_app``, plus a ``breakpoint()``
a developer added to look at a recorded run."""

from __future__ import annotations

from cli_app import greet

from engine import App
from sdk import workflow


@workflow.defn(name="hello")
async def hello_with_breakpoint(name: str) -> str:
    greeting = await greet(name)
    shout = greeting.upper()
    breakpoint()
    return shout


app = App(workflows=[hello_with_breakpoint], activities=[greet])
