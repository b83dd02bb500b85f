//! docs/security.md names, for each threat, the test that proves its answer: every test it
//! names must exist, so the table cannot drift from the suite.

use std::path::Path;

fn sources(dir: &Path, into: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("node_modules") {
            sources(&path, into);
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "mjs" || e == "py")
        {
            into.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn every_test_the_security_page_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    sources(&root.join("tests"), &mut code);
    let mut named = 0;
    for row in page.lines().filter(|l| l.starts_with('|')) {
        let Some(test_column) = row.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for quoted in test_column.split('`').skip(1).step_by(2) {
            let Some(name) = quoted.rsplit("::").next().filter(|_| quoted.contains("::")) else {
                continue;
            };
            if name == "*" {
                continue;
            }
            named += 1;
            assert!(
                code.contains(&format!("fn {name}(")) || code.contains(&format!("fn {name}<")),
                "docs/security.md names `{quoted}`, which no test defines"
            );
        }
    }
    assert!(named > 40, "the table names its tests ({named} found)");
}

/// The Keycloak the tests run (`deploy/keycloak/VERSION`, read by `scripts/keycloak`) is the one
/// compose.yaml runs and docs/providers.md lists as tested.
#[test]
fn compose_and_the_docs_name_the_keycloak_the_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let version = read("deploy/keycloak/VERSION").trim().to_owned();
    assert!(version.starts_with("26."), "{version}");
    assert!(
        read("compose.yaml").contains(&format!("quay.io/keycloak/keycloak:{version}\n")),
        "compose.yaml runs another Keycloak than {version}"
    );
    assert!(
        read("docs/providers.md").contains(&format!("Keycloak {version}")),
        "docs/providers.md does not list Keycloak {version} as tested"
    );
    assert!(
        read("docs/deploy.md").contains(&format!("Keycloak {version}")),
        "docs/deploy.md names another Keycloak than {version}"
    );
}

/// Every Keycloak test docs/providers.md names as run against Keycloak exists.
#[test]
fn every_keycloak_test_the_providers_page_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/providers.md")).unwrap();
    let mut code = String::new();
    sources(&root.join("tests"), &mut code);
    let named: Vec<&str> = page
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.starts_with("keycloak_"))
        .collect();
    assert!(named.len() >= 14, "{named:?}");
    for name in named {
        assert!(
            code.contains(&format!("fn {name}(")),
            "docs/providers.md names `{name}`, which no test defines"
        );
    }
}

/// docs/architecture.md stays true: every source path it names exists, every name it gives in
/// parentheses after a file is defined in that file, and every `Type::function` it names is
/// defined somewhere in `src/`.
#[test]
fn every_path_and_function_the_architecture_page_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    let defines = |text: &str, name: &str| {
        ["fn", "struct", "enum", "const", "trait", "type", "static"]
            .iter()
            .any(|kind| {
                text.contains(&format!("{kind} {name}("))
                    || text.contains(&format!("{kind} {name}<"))
                    || text.contains(&format!("{kind} {name} "))
                    || text.contains(&format!("{kind} {name}:"))
                    || text.contains(&format!("{kind} {name};"))
            })
            || text.contains(&format!("trigger {name}"))
    };
    let (mut paths, mut names) = (0, 0);
    let quoted: Vec<(usize, &str)> = page
        .match_indices('`')
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|pair| match pair {
            [(start, _), (end, _)] => Some((*end + 1, &page[start + 1..*end])),
            _ => None,
        })
        .collect();
    for (after, name) in &quoted {
        if name.starts_with("src/") || name.starts_with("migrations/") {
            let path = root.join(name);
            assert!(
                path.exists(),
                "docs/architecture.md names {name}, which does not exist"
            );
            paths += 1;
            // `path` (`a`, `b`): each named item is defined in that file.
            let rest = &page[*after..];
            if path.is_file() && rest.starts_with(" (`") {
                let inside = &rest[2..rest.find(')').unwrap_or(2)];
                let text = std::fs::read_to_string(&path).unwrap();
                for item in inside.split('`').skip(1).step_by(2) {
                    let item = item.rsplit("::").next().unwrap_or(item);
                    if item.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        assert!(defines(&text, item), "{name} does not define `{item}`");
                        names += 1;
                    }
                }
            }
        } else if let Some((_, function)) = name.split_once("::") {
            let function = function.rsplit("::").next().unwrap_or(function);
            if function
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                assert!(
                    defines(&code, function),
                    "no `{name}` in src/ (docs/architecture.md)"
                );
                names += 1;
            }
        }
    }
    assert!(
        paths > 40 && names > 15,
        "{paths} paths, {names} names checked"
    );
}
