//! The Dockerfile cannot be built here (no Docker engine), so this checks that what it relies
//! on matches the project: the build command, the binary's name and path, the `COPY` sources
//! (present, and not excluded by `.dockerignore`), the Rust version, a non-root user, the
//! exposed port against the default `server.listen`, and the health check, which is run for
//! real against `icewatch run`.

use std::process::Command;
use std::time::Duration;

use crate::common::{ChildGuard, free_port, http_get, icewatch_bin, read, repo_root, run, wait_for};

/// One Dockerfile instruction: keyword (upper case) and its arguments, continuations joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

fn instructions() -> Vec<Instruction> {
    let text = read(&repo_root().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, arguments) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    arguments: arguments.trim().to_string(),
                });
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends in a line continuation");
    out
}

/// Index of the last `FROM`: where the runtime stage begins.
fn runtime_stage_start(instructions: &[Instruction]) -> usize {
    instructions.iter().rposition(|instruction| instruction.keyword == "FROM").expect("a FROM")
}

/// `key = "value"` of the `[package]` table of Cargo.toml.
fn package_field(key: &str) -> String {
    let manifest: toml::Value = toml::from_str(&read(&repo_root().join("Cargo.toml"))).expect("Cargo.toml parses");
    manifest["package"][key].as_str().unwrap_or_else(|| panic!("package.{key}")).to_string()
}

/// Words of a shell-form or JSON exec-form argument list.
fn words(arguments: &str) -> Vec<String> {
    if arguments.starts_with('[') {
        serde_json::from_str(arguments).expect("exec form is a JSON array of strings")
    } else {
        arguments.split_whitespace().map(str::to_string).collect()
    }
}

#[test]
fn the_dockerfile_builds_this_package_and_ships_its_binary() {
    let instructions = instructions();
    let binary = package_field("name");
    // No [[bin]] renames the binary: the file cargo writes is the package name.
    assert!(!read(&repo_root().join("Cargo.toml")).contains("[[bin]]"));

    let stages: Vec<&Instruction> = instructions.iter().filter(|instruction| instruction.keyword == "FROM").collect();
    assert!(stages.len() >= 2, "multi-stage: a build stage and a runtime stage");
    let builder_alias =
        stages[0].arguments.rsplit_once(" AS ").map(|(_, alias)| alias.trim()).expect("FROM ... AS builder");

    let runs: Vec<&str> = instructions
        .iter()
        .filter(|instruction| instruction.keyword == "RUN")
        .map(|instruction| instruction.arguments.as_str())
        .collect();
    assert!(runs.iter().any(|run| run.contains("cargo build --release --locked")), "{runs:?}");

    // The builder's WORKDIR + target/release/<name> is what the runtime stage copies.
    let runtime_start = runtime_stage_start(&instructions);
    let builder_workdir = instructions[..runtime_start]
        .iter()
        .rfind(|instruction| instruction.keyword == "WORKDIR")
        .map(|instruction| instruction.arguments.clone())
        .expect("a WORKDIR in the build stage");
    let expected_binary = format!("{}/target/release/{binary}", builder_workdir.trim_end_matches('/'));
    let copy_from = format!("--from={builder_alias}");
    let shipped = instructions
        .iter()
        .find(|instruction| instruction.keyword == "COPY" && instruction.arguments.starts_with(&copy_from))
        .expect("COPY --from=builder");
    let copied: Vec<&str> = shipped.arguments.split_whitespace().collect();
    assert_eq!(copied[1], expected_binary);
    let installed = copied[2];

    let entrypoint = instructions.iter().find(|instruction| instruction.keyword == "ENTRYPOINT").expect("ENTRYPOINT");
    assert_eq!(words(&entrypoint.arguments)[0], installed, "ENTRYPOINT runs the copied binary");
    let command = instructions.iter().find(|instruction| instruction.keyword == "CMD").expect("CMD");
    assert_eq!(words(&command.arguments), vec!["run".to_string()]);

    // The Rust image is at least the crate's rust-version.
    let rust_version = instructions
        .iter()
        .find(|instruction| instruction.keyword == "ARG" && instruction.arguments.starts_with("RUST_VERSION="))
        .map(|instruction| instruction.arguments["RUST_VERSION=".len()..].to_string())
        .expect("ARG RUST_VERSION");
    let version =
        |text: &str| -> Vec<u32> { text.split('.').map(|part| part.parse().expect("numeric version")).collect() };
    assert!(
        version(&rust_version) >= version(&package_field("rust-version")),
        "image Rust {rust_version} is older than rust-version"
    );
    assert!(stages[0].arguments.contains("${RUST_VERSION}"));

    // Runs as a named, non-root user.
    let user = instructions.iter().rfind(|instruction| instruction.keyword == "USER").expect("USER");
    let name = user.arguments.split(':').next().unwrap_or_default();
    assert!(!name.is_empty() && name != "root" && name != "0", "USER {}", user.arguments);
    assert!(runs.iter().any(|run| run.contains("useradd") && run.contains(name)), "the user is created");
}

#[test]
fn copy_sources_exist_and_are_in_the_build_context() {
    let ignore = read(&repo_root().join(".dockerignore"));
    let rules: Vec<(bool, String)> = ignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.strip_prefix('!') {
            Some(pattern) => (false, pattern.trim_end_matches('/').to_string()),
            None => (true, line.trim_end_matches('/').to_string()),
        })
        .collect();
    // Last matching rule wins, as in Docker; this matcher knows `*` and plain paths.
    let excluded = |path: &str| {
        rules
            .iter()
            .rfind(|(_, pattern)| pattern == "*" || path == pattern || path.starts_with(&format!("{pattern}/")))
            .is_some_and(|(exclude, _)| *exclude)
    };
    let mut sources = Vec::new();
    for instruction in instructions() {
        if instruction.keyword != "COPY" || instruction.arguments.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> =
            instruction.arguments.split_whitespace().filter(|part| !part.starts_with("--")).collect();
        sources.extend(parts[..parts.len() - 1].iter().map(|source| source.trim_end_matches('/').to_string()));
    }
    assert!(sources.contains(&"src".to_string()) && sources.contains(&"Cargo.lock".to_string()), "{sources:?}");
    for source in &sources {
        assert!(repo_root().join(source).exists(), "COPY source `{source}` does not exist");
        assert!(!excluded(source), "COPY source `{source}` is excluded by .dockerignore");
    }
    for heavy in ["target", "demo", ".git", "tests"] {
        assert!(excluded(heavy), "`{heavy}` should stay out of the build context");
    }
}

#[test]
fn exposed_port_and_health_check_match_the_server() {
    let instructions = instructions();
    let expose = instructions.iter().find(|instruction| instruction.keyword == "EXPOSE").expect("EXPOSE");
    let port: u16 = expose.arguments.trim_end_matches("/tcp").parse().expect("EXPOSE <port>");
    assert_eq!(port, icewatch::config::DEFAULT_LISTEN.port(), "EXPOSE differs from the default server.listen port");

    let health = instructions.iter().find(|instruction| instruction.keyword == "HEALTHCHECK").expect("HEALTHCHECK");
    let (_, command) = health.arguments.split_once("CMD ").expect("HEALTHCHECK ... CMD");
    let command = words(command.trim());
    let url = command.iter().find(|word| word.starts_with("http://")).expect("the check fetches a URL").clone();
    let address = format!("127.0.0.1:{port}");
    assert!(url.starts_with(&format!("http://{address}/")), "{url} does not target the exposed port");
    assert_eq!(command[0], "curl", "the runtime image installs curl for the check");
    let runtime_installs_curl = instructions[runtime_stage_start(&instructions)..].iter().any(|instruction| {
        instruction.keyword == "RUN"
            && instruction.arguments.contains("install")
            && instruction.arguments.contains("curl")
    });
    assert!(runtime_installs_curl, "curl must be installed in the runtime stage");

    // Run the real service on a free port and run the health check command against it.
    let dir = tempfile::tempdir().expect("tempdir");
    let service_port = free_port();
    std::fs::write(
        dir.path().join("sensors.toml"),
        format!(
            "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\n\n\
             [server]\nlisten = \"127.0.0.1:{service_port}\"\n\n[history]\npath = \"history.db\"\n"
        ),
    )
    .expect("write config");
    let mut service = ChildGuard::spawn(
        "icewatch run",
        Command::new(icewatch_bin())
            .arg("run")
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let base = format!("http://127.0.0.1:{service_port}");
    wait_for("icewatch /metrics", Duration::from_secs(30), || http_get(&format!("{base}/metrics")));
    let local_url = url.replace(&address, &format!("127.0.0.1:{service_port}"));
    let (code, _, stderr) =
        run(Command::new(&command[0])
            .args(command[1..].iter().map(|word| if *word == url { &local_url } else { word })));
    assert_eq!(code, 0, "the HEALTHCHECK command fails against the service: {stderr}");
    // A path the server does not have fails the same command: the check is not vacuous.
    let (code, _, _) = run(Command::new("curl").args([
        "-fsS",
        "--max-time",
        "4",
        "-o",
        "/dev/null",
        &format!("{base}/no-such-route"),
    ]));
    assert_ne!(code, 0);
    assert!(
        service.terminate(Duration::from_secs(40)).is_some_and(|status| status.success()),
        "icewatch run stops cleanly on SIGTERM"
    );
}
