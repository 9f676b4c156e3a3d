//! The docs against the code: every omni2 config shown in the docs (a ```yaml block preceded
//! by `<!-- doc-config: omni2 -->`) compiles with omni2's own `Config` loader. The other
//! kinds of block and the docs' links are checked by auth-sidecar's tests/docs.rs.

use omni2_core::config::Config;
use test_support::docs::{all_yaml_blocks, read, repo_root};

/// (where, text) of each ```yaml block marked `<!-- doc-config: omni2 -->`.
fn omni2_blocks() -> Vec<(String, String)> {
    all_yaml_blocks()
        .into_iter()
        .filter(|b| b.kind == "omni2")
        .map(|b| (b.at, b.text))
        .collect()
}

const IDENTITY_SECRET: &str = "docs-test-identity-secret-0123456789abcdefghijklmnopqrst";

fn env(name: &str) -> Option<String> {
    (name == "OMNI2_IDENTITY_SECRET").then(|| IDENTITY_SECRET.to_owned())
}

fn compile(text: &str, at: &str) -> Config {
    Config::from_yaml(text, &env)
        .unwrap_or_else(|problems| panic!("{at}: the docs' omni2 config is refused:\n{problems}"))
}

#[test]
fn every_omni2_config_in_the_docs_compiles() {
    let blocks = omni2_blocks();
    assert!(
        !blocks.is_empty(),
        "no `doc-config: omni2` block in the docs"
    );
    for (at, text) in &blocks {
        compile(text, at);
    }
}

/// omni2-core/README.md calls its example a copy of the compose stack's config: the same
/// listen address, secret, role guards and servers once compiled.
#[test]
fn the_readme_example_matches_the_compose_config() {
    let readme = repo_root().join("omni2-core/README.md");
    let (at, text) = omni2_blocks()
        .into_iter()
        .find(|(at, _)| at.starts_with(&readme.display().to_string()))
        .expect("an omni2 config in omni2-core/README.md");
    let shown = compile(&text, &at);
    let compose = repo_root().join("compose/config/omni2.yaml");
    let shipped = compile(&read(&compose), &compose.display().to_string());
    assert_eq!(shown.listen, shipped.listen, "{at}: listen");
    assert_eq!(
        shown.identity_secret, shipped.identity_secret,
        "{at}: identity_secret"
    );
    assert_eq!(
        (
            &shown.roles.tool_call,
            &shown.roles.cache_admin,
            &shown.roles.ws_status
        ),
        (
            &shipped.roles.tool_call,
            &shipped.roles.cache_admin,
            &shipped.roles.ws_status
        ),
        "{at}: roles"
    );
    // Every server setting, defaults included (ServerConfig has no PartialEq).
    let servers = |c: &Config| {
        c.servers
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(servers(&shown), servers(&shipped), "{at}: servers");
}
