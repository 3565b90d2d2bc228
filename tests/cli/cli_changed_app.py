"""New code that no longer matches histories recorded by ``cli_app``: ``hello`` now calls
``wave`` where it called ``greet``, and ``pipeline`` raises a bug-class error."""

from __future__ import annotations

from cli_app import greet, step

from engine import App
from sdk import activity, workflow


@activity.defn
async def wave(name: str) -> str:
    return f"wave {name}"


@workflow.defn(name="hello")
async def hello_waving(name: str) -> str:
    return (await wave(name)).upper()


@workflow.defn(name="pipeline")
async def pipeline_with_a_bug(tag: str) -> list[str]:
    raise KeyError("bug in the new code")


app = App(workflows=[hello_waving, pipeline_with_a_bug], activities=[greet, step, wave])
