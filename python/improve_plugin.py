"""pytest plugin that improve puts on the test command's path (`-p improve_plugin`).

Under `coverage run`, it labels every test's coverage with the test's node id (what
`--cov-context=test` does in pytest-cov), so improve can tell which new test covers what; and
it writes coverage's JSON report in-process when the session ends, which saves starting
`coverage json` (a second Python process) after every suite run.
"""
import contextlib
import io
import os

import pytest

try:
    import coverage
except ImportError:  # coverage.py is optional: without it the plugin does nothing
    coverage = None


def _current():
    if coverage is None:
        return None
    current = getattr(coverage.Coverage, "current", None)
    return current() if current else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = _current() if os.environ.get("IMPROVE_COVERAGE_CONTEXTS") else None
    if cov is not None:
        cov.switch_context(item.nodeid)
    yield
    if cov is not None:
        cov.switch_context("")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("IMPROVE_COVERAGE_JSON")
    cov = _current()
    if not out or cov is None:
        return
    try:
        cov.stop()
        cov.save()
        # Quietly: pytest's own summary must stay the last line of the output.
        with contextlib.redirect_stdout(io.StringIO()):
            cov.json_report(outfile=out, pretty_print=False)
    except Exception as e:  # the report is then made the slow way, by `coverage json`
        try:
            os.remove(out)
        except OSError:
            pass
        print(f"improve_plugin: no in-process coverage report: {e}")
