//! `subnet task check` as a user runs it: every shipped task passes with its summary, a broken one
//! fails with exit code 1 and every problem listed by key.

use std::process::Command;

fn tasks_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks")
}

fn check(file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_subnet"))
        .args(["task", "check"])
        .arg(file)
        .output()
        .expect("the subnet binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_task_passes_with_a_summary() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(tasks_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) = check(&path);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            assert!(out.contains(": ok") && out.contains("digest") && out.contains("parameters"));
            names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "localnet-lm",
            "localnet-lm-groups",
            "text-lm",
            "tiny-lm",
            "wine-quality"
        ]
    );
    let (_, out, _) = check(&tasks_dir().join("localnet-lm-groups.toml"));
    assert!(out.contains("2 parameter groups"), "{out}");
    assert!(
        out.contains("70400 parameters") && out.contains("66816 parameters"),
        "{out}"
    );
    let (_, out, _) = check(&tasks_dir().join("wine-quality.toml"));
    assert!(out.contains("mlp: 11 -> 64 -> 64 -> 6"), "{out}");
    assert!(out.contains("1599 rows of 11 features, 6 classes"), "{out}");
}

#[test]
fn a_broken_task_fails_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(tasks_dir().join("tiny-lm.toml"))
        .unwrap()
        .replace("n_heads = 4", "n_heads = 5")
        .lines()
        .map(|line| {
            if line.starts_with("value_bits") {
                "value_bits = 9"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = check(&file);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(
        err.contains("model.n_heads: = 5 does not divide model.d_model = 256"),
        "{err}"
    );
    assert!(
        err.contains("compression.value_bits: = 9 is not supported"),
        "{err}"
    );
}

#[test]
fn more_groups_than_the_model_has_tensors_fail() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(tasks_dir().join("localnet-lm-groups.toml")).unwrap();
    for (groups, expected) in [
        ("groups = 200", "the model has only"),
        ("groups = 300", "shards.groups"),
    ] {
        let file = dir.path().join("groups.toml");
        std::fs::write(&file, text.replace("groups = 2", groups)).unwrap();
        let (code, out, err) = check(&file);
        assert_eq!(code, 1, "{groups}: {out}{err}");
        assert!(
            err.contains(expected) || out.contains(expected),
            "{groups}: {out}{err}"
        );
    }
}
