"""The `python` grader: validation by parsing only, and grading through the real child process."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from tunery.graders import GraderError, grade_batch, make_sample, passed, validate
from tunery.graders import python_grader, sandbox

SHORT = sandbox.Limits(timeout=1.5)

EXACT = """
def grade(sample, item):
    return 1.0 if sample["output_text"] == item["answer"] else 0.0
"""


def grader(source, **extra):
    return {"type": "python", "name": "py", "source": textwrap.dedent(source), **extra}


def run(source, pairs, limits=SHORT):
    g = grader(source)
    validate(g)
    return python_grader.grade(g, pairs, limits=limits)


def rows(*texts):
    return [(make_sample(text), {"answer": "yes", "n": i}) for i, text in enumerate(texts)]


def runtime(result):
    assert result.reward == 0.0
    assert result.errors["python_grader_runtime_error"] is True, result.errors
    assert result.errors["python_grader_server_error"] is False
    return result.errors["python_grader_runtime_error_details"]


def server(result):
    assert result.reward == 0.0
    assert result.errors["python_grader_server_error"] is True, result.errors
    return result.errors["python_grader_server_error_type"]


def clean(result):
    flags = {k: v for k, v in result.errors.items() if v not in (False, None)}
    assert flags == {}, flags
    return result.reward


# --- validate ---------------------------------------------------------------------------------

def test_a_valid_grader_with_the_optional_fields_passes_every_context():
    for context in ("eval", "run", "rft"):
        validate(grader(EXACT, image_tag="2025-05-08", pass_threshold=0.5), context=context)
    validate(grader(EXACT, image_tag="anything at all"))  # selects nothing, so any string


@pytest.mark.parametrize("change, param, words", [
    ({"source": None}, "grader.source", "Missing"),
    ({"source": 12}, "grader.source", "expected string"),
    ({"name": None}, "grader.name", "Missing"),
    ({"image_tag": 5}, "grader.image_tag", "expected string"),
    ({"pass_threshold": "high"}, "grader.pass_threshold", "expected"),
    ({"pass_threshold": True}, "grader.pass_threshold", "expected"),
    ({"pass_threshold": float("nan")}, "grader.pass_threshold", "finite"),
])
def test_bad_fields_are_named(change, param, words):
    g = grader(EXACT)
    for key, value in change.items():
        if value is None:
            del g[key]
        else:
            g[key] = value
    with pytest.raises(GraderError) as err:
        validate(g)
    assert err.value.param == param and words in err.value.message


def test_a_source_over_256_kib_is_refused_and_one_at_the_limit_is_not():
    body = EXACT + "#"
    at_limit = body + "x" * (python_grader.MAX_SOURCE_BYTES - len(body.encode()))
    validate(grader(at_limit))
    with pytest.raises(GraderError) as err:
        validate(grader(at_limit + "x"))
    assert err.value.param == "grader.source" and str(python_grader.MAX_SOURCE_BYTES) in err.value.message


@pytest.mark.parametrize("source, line", [
    ("x = 1\ny = = 2\ndef grade(s, i):\n    return 1.0\n", 2),
    ("def grade(s, i):\n    return (1.0\n", 2),
    ("def grade(s, i):\n    return 1.0\n\n\n  bad_indent = 1\n", 5),
    ("def grade(s, i):\n    nonlocal q\n    return 1.0\n", 2),  # the compiler's check, not the parser's
])
def test_a_syntax_error_names_the_source_and_its_line(source, line):
    with pytest.raises(GraderError) as err:
        validate({"type": "python", "name": "py", "source": source}, param="testing_criteria[0]")
    assert err.value.param == "testing_criteria[0].source"
    assert f"line {line}:" in err.value.message


@pytest.mark.parametrize("source", [
    "def score(sample, item):\n    return 1.0\n",
    "grade = lambda sample, item: 1.0\n",
    "class C:\n    def grade(self, sample, item):\n        return 1.0\n",
    "if True:\n    def grade(sample, item):\n        return 1.0\n",
    "",
])
def test_a_source_without_a_top_level_grade_function_is_refused(source):
    with pytest.raises(GraderError) as err:
        validate(grader(source))
    assert err.value.param == "grader.source" and "def grade(sample, item)" in err.value.message


@pytest.mark.parametrize("signature, ok", [
    ("sample, item", True),
    ("sample, item, /", True),
    ("sample, item, extra=None", True),
    ("*args", True),
    ("sample, *rest", True),
    ("sample", False),
    ("", False),
    ("sample, item, extra", False),
    ("sample, item, *, key", False),
    ("*, sample, item", False),
])
def test_grade_must_be_callable_with_two_positional_arguments(signature, ok):
    g = grader(f"def grade({signature}):\n    return 1.0\n")
    if ok:
        validate(g)
        return
    with pytest.raises(GraderError) as err:
        validate(g)
    assert err.value.param == "grader.source" and "two positional" in err.value.message


def test_the_last_definition_of_grade_is_the_one_checked_and_async_is_refused():
    validate(grader("def grade(a):\n    pass\ndef grade(a, b):\n    return 1.0\n"))
    with pytest.raises(GraderError, match="two positional"):
        validate(grader("def grade(a, b):\n    pass\ndef grade(a):\n    return 1.0\n"))
    with pytest.raises(GraderError, match="async"):
        validate(grader("async def grade(sample, item):\n    return 1.0\n"))


def test_validate_never_runs_the_source_but_grading_does(tmp_path):
    marker = tmp_path / "ran"
    g = grader(f"open({str(marker)!r}, 'w').close()\n" + EXACT)
    validate(g)
    assert not marker.exists()
    results = python_grader.grade(g, rows("yes"), limits=sandbox.Limits(timeout=5, hidden_paths=()))
    if sandbox.readonly_filesystem():
        assert "Read-only file system" in runtime(results[0]) and not marker.exists()
    else:
        assert marker.exists()  # the module ran, in the child; absolute paths are not isolated


# --- grading ----------------------------------------------------------------------------------

def test_an_exact_match_grader_scores_a_batch_through_grade_batch():
    g = grader(EXACT, pass_threshold=1)
    validate(g, context="eval")
    results = grade_batch(g, rows("yes", "no", "yes", "Yes", ""))
    assert [clean(r) for r in results] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert [passed(g, r) for r in results] == [True, False, True, False, False]
    assert all(r.type == "python" and r.name == "py" and r.execution_time > 0 for r in results)
    assert grade_batch(g, []) == []


def test_the_whole_batch_runs_in_one_child_that_is_not_the_server():
    source = """
    import os
    seen = []
    def grade(sample, item):
        seen.append(os.getpid())
        return float(len(seen)) if os.getpid() != item["server"] else -1.0
    """
    pairs = [(make_sample("a"), {"server": os.getpid()}) for _ in range(6)]
    assert [clean(r) for r in run(source, pairs)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_installed_packages_and_the_stdlib_are_importable_and_numpy_floats_count():
    source = """
    import json, math, re
    import numpy as np
    def grade(sample, item):
        words = re.findall(r"\\w+", sample["output_text"])
        return np.float64(len(words)) / math.sqrt(4) + json.loads("0")
    """
    assert [clean(r) for r in run(source, rows("one two", "a b c d"))] == [1.0, 2.0]


def test_the_reward_is_not_clamped_and_ints_are_accepted():
    source = "def grade(sample, item):\n    return [3, -0.5, 1][item['n']]\n"
    assert [clean(r) for r in run(source, rows("a", "b", "c"))] == [3.0, -0.5, 1.0]


def test_an_exception_in_one_row_is_that_rows_runtime_error_with_a_short_traceback():
    source = """
    def helper(item):
        return {"a": 1}[item["answer"]]

    def grade(sample, item):
        if sample["output_text"] == "boom":
            return helper(item)
        return 1.0
    """
    results = run(source, rows("fine", "boom", "fine"))
    assert clean(results[0]) == 1.0 and clean(results[2]) == 1.0
    details = runtime(results[1])
    assert "KeyError: 'yes'" in details
    assert 'File "<grader>", line 7, in grade' in details and "return helper(item)" in details
    assert 'File "<grader>", line 3, in helper' in details
    for server_path in (sandbox.CHILD, os.path.dirname(sandbox.__file__), os.getcwd()):
        assert server_path not in details


def test_an_error_while_loading_the_source_fails_every_row():
    results = run("import no_such_module_here\n" + EXACT, rows("yes", "no"))
    assert all("ModuleNotFoundError" in runtime(r) for r in results)
    results = run("raise SystemExit(3)\n" + EXACT, rows("yes"))
    assert "SystemExit: 3" in runtime(results[0])


@pytest.mark.parametrize("returned, words", [
    ("'1.0'", "got str"), ("None", "got NoneType"), ("True", "got bool"), ("[1.0]", "got list"),
    ("float('nan')", "nan"), ("float('inf')", "inf"), ("-float('inf')", "-inf"), ("10 ** 400", "not a float"),
])
def test_a_result_that_is_not_a_finite_float_is_a_runtime_error(returned, words):
    results = run(f"def grade(sample, item):\n    return {returned} if item['n'] == 0 else 0.25\n", rows("a", "b"))
    assert words in runtime(results[0])
    assert clean(results[1]) == 0.25


def test_an_infinite_loop_is_a_timeout_and_the_rows_after_it_still_score():
    source = """
    def grade(sample, item):
        while sample["output_text"] == "spin":
            try:
                pass
            except BaseException:  # swallowing signals does not help: the child is killed
                pass
        return 1.0
    """
    start = time.monotonic()
    results = run(source, rows("a", "spin", "b", "c"))
    elapsed = time.monotonic() - start
    assert server(results[1]) == "timeout"
    assert [clean(results[i]) for i in (0, 2, 3)] == [1.0, 1.0, 1.0]
    assert SHORT.timeout <= elapsed < SHORT.timeout + 5


def test_an_infinite_loop_while_loading_times_out_every_row():
    start = time.monotonic()
    results = run("while True:\n    pass\n" + EXACT, rows("yes", "yes"))
    assert [server(r) for r in results] == ["timeout", "timeout"]
    assert time.monotonic() - start < SHORT.timeout + 5


def test_a_memory_hog_is_a_memory_limit_server_error_and_the_rows_after_it_still_score():
    source = """
    def grade(sample, item):
        if sample["output_text"] == "hog":
            blocks = []
            while True:
                blocks.append(bytearray(100 << 20))
        return 1.0
    """
    results = run(source, rows("a", "hog", "b"), sandbox.Limits(timeout=5, memory_bytes=1 << 30))
    assert server(results[1]) == "memory_limit"
    assert clean(results[0]) == 1.0 and clean(results[2]) == 1.0


def test_an_error_while_loading_can_be_a_memory_limit_for_every_row():
    results = run("hog = bytearray(3 << 30)\n" + EXACT, rows("yes", "yes"))
    assert [server(r) for r in results] == ["memory_limit", "memory_limit"]


@pytest.mark.parametrize("limits", [SHORT, sandbox.Limits(timeout=1.5, use_namespaces=False)],
                         ids=["default", "socket_patch"])
def test_the_cpu_limit_is_a_cpu_limit_server_error(limits):
    source = """
    import resource
    def grade(sample, item):
        if sample["output_text"] == "burn":
            soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
            used = resource.getrusage(resource.RUSAGE_SELF)
            resource.setrlimit(resource.RLIMIT_CPU, (int(used.ru_utime + used.ru_stime) + 1, hard))
            while True:
                pass
        return 1.0
    """
    limits = sandbox.Limits(timeout=5, use_namespaces=limits.use_namespaces)
    results = run(source, rows("a", "burn", "b"), limits)
    assert server(results[1]) == "cpu_limit"
    assert clean(results[0]) == 1.0 and clean(results[2]) == 1.0


@pytest.mark.parametrize("line", [b"not json\n", b'{"i": 7, "value": 1.0}\n', b'[1]\n'])
def test_a_line_that_is_not_the_next_result_is_a_protocol_error(line):
    source = f"""
    import os
    def grade(sample, item):
        if sample["output_text"] == "forge":
            os.write(3, {line!r})
        return 0.5
    """
    results = run(source, rows("a", "forge", "b"))
    assert server(results[1]) == "protocol_error"
    assert clean(results[0]) == 0.5 and clean(results[2]) == 0.5


def test_the_limits_are_set_in_the_child():
    source = """
    import resource
    def grade(sample, item):
        name = ["RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_CPU"][item["n"]]
        soft, hard = resource.getrlimit(getattr(resource, name))
        return float(hard) if soft == hard else soft + hard / 1000
    """
    limits = sandbox.Limits(timeout=5, memory_bytes=1536 << 20, file_bytes=1 << 20, open_files=100)
    results = run(source, rows("a", "b", "c", "d", "e"), limits)
    assert [clean(r) for r in results] == [1536 << 20, 1 << 20, 0, 100, 31 + 32 / 1000]  # soft 5 * (5 + 1) + 1, hard + 1


@pytest.mark.skipif(sandbox.network_isolation() != "namespace", reason="needs a user namespace")
def test_in_a_user_namespace_the_grader_cannot_raise_its_hard_limits():
    source = """
    import resource
    def grade(sample, item):
        try:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            return 0.0
        return 1.0
    """
    assert clean(run(source, rows("a"))[0]) == 0.0


def test_a_big_file_write_fails_in_the_grader():
    source = """
    def grade(sample, item):
        with open("big", "wb") as f:
            f.write(b"x" * (3 << 20))
        return 1.0
    """
    details = runtime(run(source, rows("a"), sandbox.Limits(timeout=5, file_bytes=1 << 20))[0])
    assert "File too large" in details


@pytest.mark.parametrize("crash", ["os._exit(7)", "ctypes.string_at(0)", "os.close(3)"])
def test_a_crashing_child_is_a_server_error_for_that_row_only(crash):
    source = f"""
    import ctypes, os
    def grade(sample, item):
        if sample["output_text"] == "crash":
            {crash}
        return 1.0
    """
    results = run(source, rows("a", "crash", "b"))
    assert server(results[1]) == "crashed"
    assert clean(results[0]) == 1.0 and clean(results[2]) == 1.0


def test_printing_cannot_forge_results_and_an_oversized_line_is_cut_off():
    source = """
    import os, sys
    def grade(sample, item):
        print('{"i": 0, "value": 1.0}', flush=True)
        print('{"i": 1, "value": 1.0}', file=sys.stderr, flush=True)
        if sample["output_text"] == "flood":
            os.write(3, b"x" * (200 << 10))
        return 0.5
    """
    results = run(source, rows("a", "flood", "b"))
    assert clean(results[0]) == 0.5 and clean(results[2]) == 0.5
    assert server(results[1]) == "output_limit"


def test_the_server_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("TUNERY_TEST_SECRET", "s3cret-value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    source = """
    import os
    def grade(sample, item):
        if "s3cret-value" in repr(os.environ) or "OPENAI_API_KEY" in os.environ:
            return 2.0
        return float(os.environ["HOME"] == os.getcwd())
    """
    assert "s3cret-value" in repr(os.environ)  # the control: the secret is in the server's env
    assert clean(run(source, rows("a"))[0]) == 1.0  # not seen, and HOME is the empty work dir


def test_files_go_to_an_empty_temporary_directory_that_is_removed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    source = f"""
    import os
    def grade(sample, item):
        empty = os.listdir(".") == []
        with open("out.txt", "w") as f:
            f.write("hello")
        inside = os.getcwd().startswith({str(temp)!r}) and os.environ["TMPDIR"] == os.getcwd()
        return float(empty and inside and open("out.txt").read() == "hello")
    """
    assert [clean(r) for r in run(source, rows("a", "b"))] == [1.0, 0.0]  # row b sees row a's file
    assert not (tmp_path / "out.txt").exists()
    assert os.listdir(temp) == []


@pytest.mark.skipif(not sandbox.readonly_filesystem(), reason="no user-owned mount namespace here")
def test_outside_its_work_dir_the_filesystem_is_read_only_and_cannot_be_remounted(tmp_path):
    source = f"""
    import ctypes, os
    def grade(sample, item):
        if item["n"] == 0:
            open({str(tmp_path / "x")!r}, "w")
        if item["n"] == 1:
            os.remove({str(tmp_path / "keep")!r})
        libc = ctypes.CDLL(None, use_errno=True)
        for point in ("/", {str(tmp_path)!r}):
            if libc.mount(None, point.encode(), None, 4096 | 32, None) == 0:  # MS_BIND | MS_REMOUNT, rw
                return 1.0
        return 0.0
    """
    (tmp_path / "keep").write_text("data")
    results = run(source, rows("a", "b", "c"), sandbox.Limits(timeout=5, hidden_paths=()))  # /tmp visible
    assert "Read-only file system" in runtime(results[0]) and "Read-only file system" in runtime(results[1])
    assert clean(results[2]) == 0.0
    assert (tmp_path / "keep").read_text() == "data" and not (tmp_path / "x").exists()


@pytest.mark.skipif(not sandbox.readonly_filesystem(), reason="no user-owned mount namespace here")
def test_tunery_home_and_given_paths_are_hidden(monkeypatch):
    # Not under /tmp, which is hidden by default as a socket directory.
    base = tempfile.mkdtemp(dir=os.path.expanduser("~/.cache") if os.path.isdir(os.path.expanduser("~/.cache"))
                            else "/var/lib")
    try:
        home, other, seen = (os.path.join(base, name) for name in ("home", "other", "seen"))
        for d in (home, other, seen):
            os.mkdir(d)
            with open(os.path.join(d, "secret.db"), "w") as f:
                f.write("keys")
        monkeypatch.setenv("TUNERY_HOME", home)
        source = f"""
        import os
        def grade(sample, item):
            path = [{home!r}, {other!r}, {seen!r}, {home!r}][item["n"]]
            if item["n"] == 3:  # try to uncover it: the mounts are locked
                import ctypes
                ctypes.CDLL(None, use_errno=True).umount2(path.encode(), 2)  # MNT_DETACH
            try:
                return float(open(os.path.join(path, "secret.db")).read() == "keys")
            except OSError:
                return 0.0
        """
        assert sandbox.default_hidden_paths()[0] == home and "/run" in sandbox.default_hidden_paths()
        results = run(source, rows("a", "b", "c"), sandbox.Limits(timeout=5, hidden_paths=(home, other)))
        assert [clean(r) for r in results] == [0.0, 0.0, 1.0]  # the control: a path not hidden is readable
        assert [clean(r) for r in run(source, rows("a", "b", "c", "d"))] == [0.0, 1.0, 1.0, 0.0]  # default: home
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(not sandbox.readonly_filesystem(), reason="no user-owned mount namespace here")
def test_a_hidden_path_holding_the_python_environment_stays_visible(tmp_path, caplog):
    """A checkout or virtualenv under /tmp (a hidden socket directory) must not hide the grader's own
    site-packages: such a path is kept visible (read-only) and logged; a sibling stays hidden."""
    import numpy  # noqa: F401 - the test needs an installed package to import in the grader

    env_parent = os.path.dirname(os.path.realpath(sys.prefix))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "keys").write_text("keys")
    source = f"""
    import numpy
    def grade(sample, item):
        try:
            return float(open({str(secret / "keys")!r}).read() == "keys")
        except OSError:
            return 0.5
    """
    limits = sandbox.Limits(timeout=5, hidden_paths=(env_parent, str(secret)))
    hidden, kept = sandbox.hidden_paths(limits)
    assert kept == [env_parent] and hidden == [str(secret.resolve())]
    with caplog.at_level("WARNING", logger="tunery.graders"):
        sandbox._warn_kept.cache_clear()
        (result,) = run(source, rows("a"), limits)
    assert clean(result) == 0.5  # numpy imported; the sibling secret stayed hidden
    assert env_parent in caplog.text and "not hidden" in caplog.text


@pytest.mark.skipif(not sandbox.readonly_filesystem(), reason="no user-owned mount namespace here")
def test_unix_sockets_in_the_hidden_socket_directories_cannot_be_reached():
    # A read-only mount does not stop connect() on a socket file (a database's peer-auth socket).
    where = tempfile.mkdtemp(dir="/var/tmp")
    path = os.path.join(where, "db.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    source = f"""
    import socket
    def grade(sample, item):
        try:
            socket.socket(socket.AF_UNIX).connect({path!r})
        except OSError:
            return 0.0
        return 1.0
    """
    try:
        results = run(source, rows("a"), sandbox.Limits(timeout=5, hidden_paths=()))
        assert clean(results[0]) == 1.0  # the control: not hidden, a socket is reachable
        assert clean(run(source, rows("a"))[0]) == 0.0
    finally:
        listener.close()
        shutil.rmtree(where)


@pytest.mark.skipif(not sandbox.readonly_filesystem(), reason="no tmpfs work dir without a mount namespace")
def test_the_work_dir_is_a_tmpfs_of_disk_bytes():
    source = """
    def grade(sample, item):
        for name in ("a", "b"):
            with open(name, "wb") as f:
                f.write(b"x" * (3 << 20))
        return 1.0
    """
    limits = sandbox.Limits(timeout=5, disk_bytes=4 << 20, file_bytes=3 << 20)
    assert "No space left on device" in runtime(run(source, rows("a"), limits)[0])


@pytest.mark.parametrize("limits", [SHORT, sandbox.Limits(timeout=1.5, use_namespaces=False)],
                         ids=["default", "socket_patch"])
def test_the_network_is_blocked(limits):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    reach = f"""
    import socket
    def grade(sample, item):
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
        except OSError:
            return 0.0
        return 1.0
    """
    try:
        namespace = {}
        exec(textwrap.dedent(reach), namespace)
        assert namespace["grade"]({}, {}) == 1.0  # the control: reachable from the server
        assert clean(run(reach, rows("a"), limits)[0]) == 0.0
    finally:
        listener.close()


def test_a_child_that_cannot_start_is_a_server_error_for_every_row(monkeypatch):
    monkeypatch.setattr(sandbox, "CHILD", "/nonexistent/tunery_child.py")
    results = run(EXACT, rows("yes", "yes"))
    assert [server(r) for r in results] == ["crashed", "crashed"]


def _unshare_works():
    unshare = shutil.which("unshare")
    return unshare is not None and any(
        subprocess.run([unshare, *flags, sys.executable, "-c", "pass"], capture_output=True).returncode == 0
        for flags in (["-r", "-n"], ["-n"]))


@pytest.mark.skipif(not _unshare_works(), reason="unshare cannot make a network namespace here")
def test_where_unshare_works_the_child_has_its_own_network_namespace():
    assert sandbox.network_isolation() == "namespace"
    ours = os.readlink("/proc/self/ns/net")
    source = f"""
    import os
    def grade(sample, item):
        return float(os.readlink("/proc/self/ns/net") != {ours!r})
    """
    assert clean(run(source, rows("a"))[0]) == 1.0
    fallback = run(source, rows("a"), sandbox.Limits(timeout=1.5, use_namespaces=False))
    assert clean(fallback[0]) == 0.0  # the socket patch keeps the server's namespace


NOBODY_PROBE = '''
import sys
sys.path.insert(0, sys.argv[1])
import sandbox
source = """
import threading, time
def grade(sample, item):
    started = 0
    try:
        for _ in range(100):
            threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
            started += 1
    except RuntimeError:  # "can't start new thread": RLIMIT_NPROC counts threads
        pass
    return float(started)
"""
limits = sandbox.Limits(timeout=10, processes=int(sys.argv[2]))
print(",".join(sandbox.namespaces(limits)) or "none", sandbox.run_batch(source, [({}, {})], limits)[0].value)
'''


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="needs root, setpriv and a system python to act as an unprivileged server")
def test_an_unprivileged_server_gets_a_namespace_and_a_process_limit():
    # RLIMIT_NPROC is never enforced for real root, so run the sandbox as `nobody`, the way a
    # non-root server runs it (the sandbox modules are stdlib-only, so a system python will do).
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        for name in ("sandbox.py", "_sandbox_child.py"):
            shutil.copy(os.path.join(os.path.dirname(sandbox.__file__), name), d)
        probe = os.path.join(d, "probe.py")
        with open(probe, "w") as f:
            f.write(NOBODY_PROBE)
        os.chmod(probe, 0o644)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", probe, d, "12"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=d, timeout=60)
    if done.returncode != 0 and done.stderr.startswith("setpriv:"):
        pytest.skip(f"cannot run as nobody here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    flags, started = done.stdout.split()
    if "-r" not in flags.split(","):
        pytest.skip("no unprivileged user namespaces here: RLIMIT_NPROC is not applied")
    # 12 tasks in the namespace: the main thread and 11 more (10 when `unshare --fork` itself counts).
    assert float(started) in (10.0, 11.0)


@pytest.mark.skipif("--pid" not in sandbox.namespaces(), reason="no PID namespace here")
def test_the_grader_cannot_see_or_signal_the_server_and_its_processes_die_with_it(tmp_path):
    marker = tmp_path / "survivor"
    source = f"""
    import os, subprocess
    def grade(sample, item):
        if item["n"] == 0:
            try:
                os.kill(item["server"], 0)
            except ProcessLookupError:
                return 0.0
            return 1.0
        if item["n"] == 1:
            try:
                open(f"/proc/{{item['server']}}/environ").read()
            except OSError:
                return 0.0
            return 1.0
        subprocess.Popen(["sh", "-c", "sleep 1; touch {marker}"], start_new_session=True)
        return 0.0
    """
    pairs = [(make_sample("a"), {"n": n, "server": os.getpid()}) for n in range(3)]
    assert [clean(r) for r in run(source, pairs)] == [0.0, 0.0, 0.0]
    time.sleep(2)
    assert not marker.exists()  # the detached grandchild died with the namespace's pid 1


def test_a_missing_interpreter_is_spawn_failed_for_every_row(monkeypatch):
    monkeypatch.setattr(sandbox.sys, "executable", "/nonexistent/python3")
    results = run(EXACT, rows("yes", "yes"), sandbox.Limits(timeout=1.5, use_namespaces=False))
    assert [server(r).startswith("spawn_failed: ") for r in results] == [True, True]


def test_a_module_that_writes_a_non_ready_line_is_a_protocol_error_for_every_row():
    results = run("import os\nos.write(3, b'{\"ready\": 1}\\n')\n" + EXACT, rows("yes", "yes"))
    assert [server(r) for r in results] == ["protocol_error", "protocol_error"]


@pytest.mark.skipif(not sandbox.readonly_filesystem() or "--pid" not in sandbox.namespaces(),
                    reason="needs the mount and PID namespaces")
def test_a_filesystem_setup_failure_is_loud_for_every_row():
    # Covering the child's own /proc/1 (it is pid 1) breaks the id-map writes of the nested namespace.
    results = run(EXACT, rows("yes", "yes"), sandbox.Limits(timeout=5, hidden_paths=("/proc/1",)))
    assert all(server(r).startswith("sandbox_setup_failed: ") for r in results)
