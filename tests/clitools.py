"""What the CLI tests share: ``spikecode`` invoked in-process, and a refusal checked."""

from click.testing import CliRunner

from spikecode.cli import main


def run(*args, env=None, input=None):
    """Invoke ``spikecode`` with ``args`` (each through ``str``); exceptions propagate."""
    runner = CliRunner(env=env)
    return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def fails(*args, match):
    """Run ``args``, which must refuse: exit 1, no traceback, ``match`` in the output."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert match in result.output, result.output
    return result
