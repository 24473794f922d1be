//! The `quotad` binary as a process: what an operator's log pipeline receives.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

#[test]
fn logs_carry_no_colour_codes_when_stdout_is_not_a_terminal() {
    let dir = std::env::temp_dir().join(format!("quotad-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("quotad.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nenabled = false\n[[resources]]\nname = \"r\"\nconcurrency = 1\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quotad"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines().take(20) {
        let line = line.unwrap();
        let serving = line.contains("quotad serving");
        lines.push(line);
        if serving {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        lines.iter().any(|l| l.contains("quotad serving")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
    }
}

#[test]
fn unrelated_quotad_variables_do_not_stop_the_server() {
    // A script's QUOTAD_BIN is not config; QUOTAD_SERVER__LISTEN is.
    let out = Command::new(env!("CARGO_BIN_EXE_quotad"))
        .arg("--check")
        .env("QUOTAD_BIN", "/usr/local/bin/quotad")
        .env("QUOTAD_SERVER__LISTEN", "127.0.0.1:50999")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen 127.0.0.1:50999"), "{stdout}");
}

#[test]
fn a_server_on_one_thread_answers_as_usual() {
    // server.worker_threads = 1: the current-thread runtime (BENCHMARKS.md).
    let dir = std::env::temp_dir().join(format!("quotad-one-thread-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("quotad.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nworker_threads = 1\n[metrics]\nenabled = false\n\
         [[resources]]\nname = \"llm.invoke\"\nconcurrency = 5\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quotad"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = BufReader::new(stdout)
        .lines()
        .take(50)
        .find_map(|l| {
            let l = l.ok()?;
            let rest = l.split("addr=Some(").nth(1)?;
            rest.split(')').next().map(str::to_owned)
        })
        .expect("quotad logged its address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (in_flight, version) = runtime.block_on(async {
        use quotad_api::v1::{self as pb, quota_admin_client::QuotaAdminClient};
        let url = format!("http://{addr}");
        let mut quota = pb::quota_service_client::QuotaServiceClient::connect(url.clone())
            .await
            .unwrap();
        for _ in 0..2 {
            let r = quota
                .acquire(pb::AcquireRequest {
                    resource: "llm.invoke".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.granted, "{r:?}");
        }
        let mut admin = QuotaAdminClient::connect(url).await.unwrap();
        let listed = admin
            .list_resources(pb::ListResourcesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let reloaded = admin
            .reload_config(pb::ReloadConfigRequest::default())
            .await
            .unwrap()
            .into_inner();
        (listed.resources[0].in_flight, reloaded.config_version)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((in_flight, version), (2, 2));
}
