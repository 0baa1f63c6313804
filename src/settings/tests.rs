//! Unit tests of settings loading: layers, foreign variables, errors naming their key.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn defaults_are_valid() {
    let s = Settings::load(&Cli::default(), env(&[])).unwrap();
    assert_eq!(s, Settings::default());
}

#[test]
fn env_then_flags_override() {
    let cli = Cli {
        bus: Some("redis".into()),
        set: vec!["limits.max_subscriptions=3".into()],
        ..Cli::default()
    };
    let s = Settings::load(
        &cli,
        env(&[
            ("ROOMCAST_LISTEN", "0.0.0.0:9000"),
            ("ROOMCAST_BUS", "memory"),
            ("ROOMCAST_LIMITS__MAX_CONNECTIONS", "7"),
            ("ROOMCAST_ALLOWED_ORIGINS", "http://a,http://b"),
        ]),
    )
    .unwrap();
    assert_eq!(s.listen.port(), 9000);
    assert_eq!(s.bus, BusKind::Redis);
    assert_eq!(s.limits.max_connections, 7);
    assert_eq!(s.limits.max_subscriptions, 3);
    assert_eq!(s.allowed_origins, ["http://a", "http://b"]);
}

#[test]
fn foreign_variables_under_the_prefix_are_ignored() {
    let s = Settings::load(
        &Cli::default(),
        env(&[
            ("ROOMCAST_PORT", "tcp://10.0.0.1:8080"),
            ("ROOMCAST_SERVICE_HOST", "10.0.0.1"),
            ("ROOMCAST_BIN", "/x"),
        ]),
    )
    .unwrap();
    assert_eq!(s, Settings::default());
}

#[test]
fn top_level_keys_are_complete() {
    let value = serde_json::to_value(Settings::default()).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut known = TOP_LEVEL_KEYS.to_vec();
    keys.sort_unstable();
    known.sort_unstable();
    assert_eq!(keys, known);
}

#[test]
fn bad_values_name_the_key() {
    let err = |pairs: &[(&str, &str)]| {
        Settings::load(&Cli::default(), env(pairs))
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[("ROOMCAST_LISTEN", "nowhere")]).contains("listen"));
    assert!(err(&[("ROOMCAST_BUS", "kafka")]).contains("bus"));
    assert!(err(&[("ROOMCAST_LIMITS__MAX_CONECTIONS", "1")]).contains("max_conections"));
    assert!(err(&[("ROOMCAST_LIMITS__MAX_CONNECTIONS", "0")]).contains("limits.max_connections"));
}
