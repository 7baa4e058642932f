//! One run spread over machines: `improve plan`, workers (`improve work`) as processes at once
//! against a bare repository as the remote, one killed and restarted, then `improve gather`.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::*;

const GEO: &str = "def area(w, h):\n    if w < 0 or h < 0:\n        raise ValueError(\"negative side\")\n    return w * h\n\n\ndef perimeter(w, h):\n    return 2 * (w + h)\n";
const GOOD_GEO: &str = "import pytest\n\nfrom calc.geo import area, perimeter\n\n\ndef test_area():\n    assert area(2, 3) == 6\n\n\ndef test_area_negative():\n    with pytest.raises(ValueError):\n        area(-1, 2)\n\n\ndef test_perimeter():\n    assert perimeter(2, 3) == 10\n";
const NUM: &str = "def is_even(n):\n    return n % 2 == 0\n\n\ndef sign(n):\n    if n > 0:\n        return 1\n    if n < 0:\n        return -1\n    return 0\n";
const GOOD_NUM: &str = "from calc.num import is_even, sign\n\n\ndef test_is_even():\n    assert is_even(4)\n    assert not is_even(3)\n\n\ndef test_sign():\n    assert sign(5) == 1\n    assert sign(-2) == -1\n    assert sign(0) == 0\n";

/// Answers each prompt with tests for the module it names (the workers ask in any order).
pub(super) struct ByTarget {
    tests: Vec<(&'static str, String)>,
}

impl Respond for ByTarget {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&req.body);
        let text = self
            .tests
            .iter()
            .find(|(module, _)| body.contains(&format!("for the module `{module}`")))
            .map(|(_, code)| format!("```python\n{code}```\n"))
            .unwrap_or_else(|| "no idea".into());
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 40}
        }))
    }
}

pub(super) async fn stand_in(tests: Vec<(&'static str, String)>) -> StandIn {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ByTarget { tests })
        .mount(&server)
        .await;
    StandIn {
        server,
        wire: Wire::OpenAi,
    }
}

fn good_tests() -> Vec<(&'static str, String)> {
    vec![
        ("calc/ops.py", GOOD_OPS.to_string()),
        ("calc/text.py", GOOD_TEXT.to_string()),
        ("calc/geo.py", GOOD_GEO.to_string()),
        ("calc/num.py", GOOD_NUM.to_string()),
    ]
}

/// The fixture with four modules, pushed to a bare repository that serves as the remote.
struct Cluster {
    fx: Fixture,
    /// The remote, the plan and every clone.
    space: tempfile::TempDir,
    remote: PathBuf,
    plan: PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        let fx = Fixture::new();
        std::fs::write(fx.root().join("calc/geo.py"), GEO).unwrap();
        fx.commit_file("calc/num.py", NUM);
        Cluster::of(fx)
    }

    /// With `fx`'s modules only.
    fn of(fx: Fixture) -> Cluster {
        let space = tempfile::tempdir().unwrap();
        let remote = space.path().join("remote.git");
        git(
            fx.root(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                remote.to_str().unwrap(),
            ],
        );
        git(
            fx.root(),
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        git(fx.root(), &["push", "-q", "origin", "main"]);
        let plan = space.path().join("plan.json");
        Cluster {
            fx,
            space,
            remote,
            plan,
        }
    }

    /// A new clone of the remote, as a fresh machine would make.
    fn clone(&self, name: &str) -> PathBuf {
        let dir = self.space.path().join(name);
        git(
            self.fx.root(),
            &[
                "clone",
                "-q",
                self.remote.to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
        dir
    }

    fn worker(&self, llm: &StandIn, dir: &Path, shard: u32, extra: &[&str]) -> Command {
        let mut cmd = improve(dir);
        cmd.args([
            "work",
            "--plan",
            self.plan.to_str().unwrap(),
            "--push",
            "origin",
        ])
        .arg("--shard")
        .arg(shard.to_string())
        .args(extra);
        llm.args(&mut cmd);
        cmd
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn plan_json(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&c.plan).unwrap()).unwrap()
}

/// `improve plan` for `shards` shards and `n` iterations; its --matrix output.
async fn make_plan(c: &Cluster, llm: &StandIn, shards: u32, n: u32) -> String {
    let mut cmd = improve(c.fx.root());
    cmd.args(["plan", "--shards", &shards.to_string(), "--matrix", "-n"])
        .arg(n.to_string())
        .arg("--out")
        .arg(&c.plan)
        .arg("--require-coverage-gain=false");
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_shards_at_once_one_killed_and_restarted_elsewhere_gather_into_one_run() {
    let c = Cluster::new();
    let llm = stand_in(good_tests()).await;
    let matrix = make_plan(&c, &llm, 3, 6).await;
    assert_eq!(matrix.trim(), "[0,1,2]");
    let plan = plan_json(&c);
    let shards = plan["shards"].as_array().unwrap();
    let mut modules: Vec<&str> = shards
        .iter()
        .flat_map(|s| s["modules"].as_array().unwrap())
        .map(|m| m.as_str().unwrap())
        .collect();
    modules.sort();
    assert_eq!(
        modules,
        ["calc/geo.py", "calc/num.py", "calc/ops.py", "calc/text.py"],
        "every module in exactly one shard"
    );
    assert!(shards.iter().all(|s| s["iterations"] == 2));

    // Three workers at once; shard 1's is killed (-9) right after its first push.
    let dirs: Vec<PathBuf> = (0..3).map(|k| c.clone(&format!("w{k}"))).collect();
    let mut children = Vec::new();
    for (k, dir) in dirs.iter().enumerate() {
        let mut cmd = c.worker(&llm, dir, k as u32, &[]);
        if k == 1 {
            cmd.env("IMPROVE_TEST_ABORT_AT", "pushed:1");
        }
        children.push(spawn(cmd));
    }
    let mut outs = Vec::new();
    for child in children {
        outs.push(wait(child).await);
    }
    for k in [0, 2] {
        assert_eq!(outs[k].status.code(), Some(0), "{}", stderr(&outs[k]));
    }
    assert_eq!(outs[1].status.code(), None, "killed by its signal");

    // A second worker for shard 1 on another machine is refused while the first holds it...
    let again = c.clone("w1-again");
    let refused = output(c.worker(&llm, &again, 1, &[])).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("held by another worker")
            && stderr(&refused).contains("--take-over"),
        "{}",
        stderr(&refused)
    );
    // ...and takes over when told the first is gone: it resumes from what that one pushed.
    let restarted = output(c.worker(&llm, &again, 1, &["--take-over"])).await;
    assert_eq!(restarted.status.code(), Some(0), "{}", stderr(&restarted));
    assert!(
        stderr(&restarted)
            .contains("resuming shard 1 from what origin holds: 1 of 2 iterations done"),
        "{}",
        stderr(&restarted)
    );

    // Gather in a fresh clone.
    let g = c.clone("gather");
    let mut cmd = improve(&g);
    cmd.args([
        "gather",
        "--plan",
        c.plan.to_str().unwrap(),
        "--push",
        "origin",
    ])
    .arg("--test-cmd")
    .arg(test_cmd());
    let gathered = output(cmd).await;
    assert_eq!(gathered.status.code(), Some(0), "{}", stderr(&gathered));

    let status = |dir: &Path| improve_json(dir, &["status", "--json"]);
    let shard_status = [status(&dirs[0]), status(&again), status(&dirs[2])];
    let log = improve_json(&g, &["log", "--json"]);
    let log = log.as_array().unwrap();
    let numbers: Vec<u64> = log.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "every iteration once");

    // Every kept commit on the run branch exactly once, numbered as the gathered log says.
    let run_id = plan["run_id"].as_str().unwrap();
    let branch = format!("improve/{run_id}");
    let trailers = git(
        &g,
        &[
            "log",
            "--format=%(trailers:key=Improve-Iteration,valueonly)",
            &format!("main..{branch}"),
        ],
    );
    let mut on_branch: Vec<u64> = trailers
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect();
    on_branch.sort();
    let mut kept: Vec<u64> = log
        .iter()
        .filter(|r| r["outcome"] == "kept")
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    kept.sort();
    assert_eq!(on_branch, kept);
    let shard_kept: u64 = shard_status
        .iter()
        .map(|s| s["kept"].as_u64().unwrap())
        .sum();
    assert_eq!(kept.len() as u64, shard_kept, "nothing lost, nothing twice");
    assert!(
        shard_kept >= 4,
        "each module's first iteration kept: {shard_kept}"
    );

    // The report's line per shard matches the shard's own status.
    let report = improve_json(&g, &["report", "--format", "json"]);
    let rows = report["gathered"]["shards"].as_array().unwrap();
    for (row, own) in rows.iter().zip(&shard_status) {
        assert_eq!(row["kept"], own["kept"], "{row} vs {own}");
        assert_eq!(row["iterations"], own["iterations_done"], "{row} vs {own}");
        assert_eq!(row["status"], "complete");
    }
    let markdown = improve(&g).arg("report").output().unwrap();
    assert!(
        stdout(&markdown).contains("## Shards"),
        "{}",
        stdout(&markdown)
    );

    // The combined suite passes on a fresh clone of the pushed branch.
    let check = c.clone("check");
    git(&check, &["checkout", "-q", &branch]);
    let pytest = std::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&check)
        .output()
        .unwrap();
    assert!(pytest.status.success(), "{}", stdout(&pytest));

    // Gathering again adds nothing and changes nothing.
    let tip = git(&g, &["rev-parse", &branch]);
    let mut cmd = improve(&g);
    cmd.args(["gather", "--plan", c.plan.to_str().unwrap()])
        .arg("--test-cmd")
        .arg(test_cmd());
    let again_out = output(cmd).await;
    assert_eq!(again_out.status.code(), Some(0), "{}", stderr(&again_out));
    assert_eq!(git(&g, &["rev-parse", &branch]), tip);
    assert_eq!(
        improve_json(&g, &["log", "--json"])
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

/// Passes on its own shard (nothing there reads `calc.text`), but sets `calc.text.SEPARATOR`
/// for every test collected after it: with the other shard's tests of `slug`, the suite fails.
const POLLUTING_OPS: &str = "import calc.text\n\nfrom calc.ops import clamp, divide\n\ncalc.text.SEPARATOR = \"_\"\n\n\ndef test_divide():\n    assert divide(6, 3) == 2\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn gather_names_missing_shards_then_adds_them_and_bisects_out_what_breaks_the_combined_suite()
{
    // Two modules, two shards: `ops` and `text` never meet before gather.
    let c = Cluster::of(Fixture::new());
    let llm = stand_in(vec![
        ("calc/ops.py", POLLUTING_OPS.to_string()),
        ("calc/text.py", GOOD_TEXT.to_string()),
    ])
    .await;
    make_plan(&c, &llm, 2, 2).await;
    let plan = plan_json(&c);
    let shard_of = |module: &str| {
        plan["shards"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| s["modules"].as_array().unwrap().iter().any(|m| m == module))
            .unwrap()
    };
    let (ops, text) = (shard_of("calc/ops.py"), shard_of("calc/text.py"));
    assert_ne!(ops, text, "{plan}");
    let gather = |g: &Path| {
        let mut cmd = improve(g);
        cmd.args(["gather", "--plan", c.plan.to_str().unwrap()])
            .arg("--test-cmd")
            .arg(test_cmd());
        cmd
    };

    // Only the shard with `text` has pushed: gather takes it and names the other.
    let first = c.clone("first");
    let out = output(c.worker(&llm, &first, text as u32, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let g = c.clone("gather");
    let partial = output(gather(&g)).await;
    assert_eq!(partial.status.code(), Some(3), "{}", stderr(&partial));
    assert!(
        stderr(&partial).contains(&format!("shard {ops}: missing")),
        "{}",
        stderr(&partial)
    );
    let status = improve_json(&g, &["status", "--json"]);
    assert_eq!(status["iterations_done"], 1, "{status}");

    // The other shard arrives; its polluting commit is found and left out.
    let second = c.clone("second");
    let out = output(c.worker(&llm, &second, ops as u32, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let own = improve_json(&second, &["status", "--json"]);
    assert!(
        own["kept"].as_u64().unwrap() >= 1,
        "kept on its own shard: {own}"
    );
    let full = output(gather(&g)).await;
    assert_eq!(full.status.code(), Some(0), "{}", stderr(&full));
    let log = improve_json(&g, &["log", "--json"]);
    let left_out: Vec<&serde_json::Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == "calc/ops.py" && r["outcome"] == "rejected")
        .collect();
    assert!(!left_out.is_empty(), "{log}");
    assert!(
        left_out
            .iter()
            .all(|r| r["reason"].as_str().unwrap().contains("the suite fails")),
        "{log}"
    );
    let (passes, output) = {
        let check = c.clone("check");
        let run_id = plan["run_id"].as_str().unwrap();
        git(&g, &["push", "-q", "origin", &format!("improve/{run_id}")]);
        git(&check, &["fetch", "-q", "origin"]);
        git(&check, &["checkout", "-q", &format!("improve/{run_id}")]);
        let out = std::process::Command::new(python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&check)
            .output()
            .unwrap();
        (out.status.success(), stdout(&out))
    };
    assert!(passes, "{output}");
    let report = improve_json(&g, &["report", "--format", "json"]);
    let row = &report["gathered"]["shards"][ops];
    assert_eq!(row["left_out"], left_out.len(), "{row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_refuses_a_bad_index_a_damaged_or_newer_plan_and_a_foreign_base() {
    let c = Cluster::new();
    let llm = stand_in(good_tests()).await;
    make_plan(&c, &llm, 2, 2).await;
    let w = c.clone("w");
    let run = |args: &[&str], plan: &Path| {
        let mut cmd = improve(&w);
        cmd.args(["work", "--plan", plan.to_str().unwrap()])
            .args(args);
        llm.args(&mut cmd);
        cmd.output().unwrap()
    };
    let out = run(&["--shard", "2"], &c.plan);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("shard 2 (from --shard) is outside the plan, which has shards 0 to 1"),
        "{}",
        stderr(&out)
    );
    let out = run(&[], &c.plan);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no shard index"), "{}", stderr(&out));

    let damaged = c.space.path().join("damaged.json");
    std::fs::write(&damaged, "{\"format\": 1, \"run_id\": ").unwrap();
    let out = run(&["--shard", "0"], &damaged);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));

    let mut newer = plan_json(&c);
    newer["format"] = 99.into();
    std::fs::write(&damaged, newer.to_string()).unwrap();
    let out = run(&["--shard", "0"], &damaged);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("newer improve"), "{}", stderr(&out));

    let mut foreign = plan_json(&c);
    foreign["base_commit"] = "0123456789abcdef0123456789abcdef01234567".into();
    std::fs::write(&damaged, foreign.to_string()).unwrap();
    let out = run(&["--shard", "0"], &damaged);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("base commit 0123456789 is not in this repository"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_that_refuses_the_push_leaves_the_results_here_and_the_next_push_sends_them() {
    let c = Cluster::new();
    let llm = stand_in(good_tests()).await;
    make_plan(&c, &llm, 2, 2).await;
    // The remote takes the claim, then refuses the branch (a hook, as a server's policy might).
    let hook = c.remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do case \"$ref\" in refs/heads/*) echo 'refused by policy' >&2; exit 1;; esac; done\nexit 0\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).unwrap();
    let w2 = c.clone("w2");
    let refused = output(c.worker(&llm, &w2, 1, &[])).await;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("refused the push: refused by policy"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("run the same command again to push them"),
        "{}",
        stderr(&refused)
    );
    let kept = improve_json(&w2, &["status", "--json"])["kept"]
        .as_u64()
        .unwrap();
    assert!(kept >= 1);
    // The remote accepts again: the same command pushes what was kept.
    std::fs::remove_file(&hook).unwrap();
    let again = output(c.worker(&llm, &w2, 1, &[])).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let run_id = plan_json(&c)["run_id"].as_str().unwrap().to_string();
    let pushed = git(
        &w2,
        &[
            "ls-remote",
            "origin",
            &format!("refs/heads/improve/{run_id}-shard-1"),
        ],
    );
    let local = git(&w2, &["rev-parse", &format!("improve/{run_id}-shard-1")]);
    assert!(pushed.starts_with(&local), "{pushed} vs {local}");
}
