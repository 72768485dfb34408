//! Issue 19 item 5, the CLI's habits as scripts rely on them, against a real controller:
//! the data dir, API and token from `CORACLE_*`; `--json` that parses; documented exit codes
//! (2 usage, 3 not found, 4 conflict, 5 unreachable); a closed pipe ends the command
//! quietly; events oldest first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use support::Controller;

fn coracle() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coracle"));
    command.env("RUST_LOG", "warn");
    command
}

fn code(output: &std::process::Output) -> Option<i32> {
    output.status.code()
}

#[test]
fn environment_json_exit_codes_and_closed_pipes() {
    let controller = Controller::start();
    for name in ["pi-1", "pi-2"] {
        controller.enrol(name);
    }

    // CORACLE_DATA_DIR stands for --data-dir; --json prints what scripts parse.
    let listed = coracle()
        .args(["device", "ls", "--json"])
        .env("CORACLE_DATA_DIR", controller.data_dir())
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let devices: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pi-1", "pi-2"]);
    let keys: serde_json::Value =
        serde_json::from_slice(&controller.cli(&["admin", "keys", "--json"]).stdout).unwrap();
    assert_eq!(keys["deployment_key"]["epoch"], 0);
    assert_eq!(keys["devices"].as_array().unwrap().len(), 2);
    let audit: serde_json::Value =
        serde_json::from_slice(&controller.cli(&["audit", "--json"]).stdout).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["device.add", "device.add"], "oldest first");

    // CORACLE_API and CORACLE_TOKEN stand for --api and --token: a wrong token is refused.
    let api = std::fs::read_to_string(controller.data_dir().join("api.url")).unwrap();
    let refused = coracle()
        .args(["device", "ls", "--data-dir"])
        .arg(controller.data_dir())
        .env("CORACLE_API", api.trim())
        .env("CORACLE_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert_eq!(code(&refused), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );

    // Exit codes: usage 2, not found 3, conflict 4, unreachable 5.
    assert_eq!(code(&controller.cli(&["device", "frobnicate"])), Some(2));
    let missing = controller.cli(&["device", "show", "pi-9"]);
    assert_eq!(code(&missing), Some(3), "{missing:?}");
    let again = controller.cli(&["device", "add", "pi-1", "--out", "/dev/null"]);
    assert_eq!(code(&again), Some(4), "{again:?}");
    let down = controller.cli(&["device", "ls", "--api", "https://127.0.0.1:1"]);
    assert_eq!(code(&down), Some(5), "{down:?}");
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot reach"),
        "{down:?}"
    );

    // A reader that went away (`| head`): the command ends by SIGPIPE, with nothing on
    // stderr (no panic, no "error: Broken pipe").
    let mut child = coracle()
        .args(["device", "ls", "--data-dir"])
        .arg(controller.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let ended = child.wait_with_output().unwrap();
    assert_eq!(ended.status.signal(), Some(libc::SIGPIPE), "{ended:?}");
    assert!(
        ended.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
}
