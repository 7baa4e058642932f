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
struct ByTarget {
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

async fn stand_in(tests: Vec<(&'static str, String)>) -> StandIn {
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
