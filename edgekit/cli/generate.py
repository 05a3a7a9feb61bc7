from __future__ import annotations

import click

from edgekit.cli.common import MODEL_ARG, console, generation_summary, sampling_options, stream_printer


@click.command("generate")
@MODEL_ARG
@click.option("--prompt", "-p", required=True)
@click.option("--chat", is_flag=True, help="Wrap the prompt in the model's chat template.")
@click.option("--system", default=None, help="System message (with --chat).")
@click.option("--target", default=None, help="Run an exported artifact of this target instead of the eager graph.")
@click.option("--artifact", type=click.Path(exists=True), default=None, help="The artifact folder (with --target).")
@click.option("--hide-reasoning", is_flag=True, help="Do not print <think> reasoning.")
@sampling_options
def command(model, prompt, chat, system, target, artifact, hide_reasoning, **sampling) -> None:
    """Generate text from MODEL on this host (eager PyTorch, or an exported artifact with --target)."""
    from edgekit.model.load import load
    from edgekit.runtime.generate import generate_text

    m = load(model)
    if target:
        from edgekit.host import session_for

        session = session_for(m, target, artifact)
    else:
        session = m.session(last_logits_only=False)   # every position's logits: speculation verifies with them
    res = generate_text(session, m.tokenizer, prompt, chat=chat, system=system,
                        stream=stream_printer(not hide_reasoning), defaults=m.generation_defaults,
                        stop_ids=m.stop_ids, **sampling)
    console.print()
    console.print(f"[dim]{generation_summary(res)}[/]")
