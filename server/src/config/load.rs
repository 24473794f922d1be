//! Where config comes from: a TOML file (or the embedded default when none is given), then `QUOTAD_*`
//! environment variables on top, `__` separating levels: `QUOTAD_SERVER__LISTEN=0.0.0.0:50051`,
//! `QUOTAD_CAPACITY__MAX_LEASES=500000`.

use std::path::Path;

use config::{Config, Environment, File, FileFormat};

use super::{ConfigError, Settings, file::ConfigFile};

/// The embedded default config: a few example resources so a new user can call the server at once.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// `QUOTAD_SECTION__KEY` overrides (and `QUOTAD_STORE`). Other `QUOTAD_*` variables are not config: a
/// script's `QUOTAD_BIN` or a tool's `QUOTADCTL_ADDR`-like name must not stop the server with "unknown field".
fn environment() -> Environment {
    let ours = std::env::vars().filter(|(k, _)| {
        k.strip_prefix("QUOTAD_")
            .is_some_and(|rest| rest.contains("__") || rest.eq_ignore_ascii_case("STORE"))
    });
    Environment::with_prefix("QUOTAD")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(ours.collect()))
}

fn finish(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    base: &Path,
) -> Result<Settings, ConfigError> {
    let file: ConfigFile = builder
        .add_source(environment())
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| ConfigError::Source(e.to_string()))?;
    file.validate_in(base)
}

/// Loads `path` (or the embedded default when `None`), applies the environment, and validates.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let builder = match path {
        Some(p) => {
            if !p.is_file() {
                return Err(ConfigError::Source(format!(
                    "{}: no such file",
                    p.display()
                )));
            }
            Config::builder().add_source(File::from(p).format(FileFormat::Toml).required(true))
        }
        None => Config::builder().add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml)),
    };
    let base = path
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    finish(builder, base)
}

/// Loads TOML text (no environment overrides): for tests and `--check`.
pub fn load_str(toml: &str) -> Result<Settings, ConfigError> {
    let file: ConfigFile = Config::builder()
        .add_source(File::from_str(toml, FileFormat::Toml))
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| ConfigError::Source(e.to_string()))?;
    file.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_has_examples() {
        let s = load_str(DEFAULT_CONFIG).unwrap();
        assert!(s.rules.resolve("bedrock.invoke").is_some());
        assert!(s.rules.resolve("partner.stripe").is_some());
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn a_rate_algorithm_is_named_and_its_combinations_checked() {
        let err = |rate: &str| {
            load_str(&format!("[[resources]]\nname = \"a\"\nrate = {rate}"))
                .unwrap_err()
                .to_string()
        };
        let e = err("{ limit = 5, algorithm = \"leaky\" }");
        assert!(
            e.contains("rate.algorithm") && e.contains("sliding_window"),
            "{e}"
        );
        let e = err("{ limit = 5, burst = 9, algorithm = \"fixed_window\" }");
        assert!(
            e.contains("rate.burst") && e.contains("only a token_bucket"),
            "{e}"
        );
        let e = err("{ limit = 5, period = \"1500us\", algorithm = \"sliding_window\" }");
        assert!(
            e.contains("rate.period") && e.contains("whole number of milliseconds"),
            "{e}"
        );
        let s = load_str(
            "[[resources]]\nname = \"a\"\nrate = { limit = 5, period = \"1m\", algorithm = \"sliding_window\" }\n\
             [[resources.partitions]]\ndescriptor = \"t\"\nrate = { limit = 2, algorithm = \"fixed_window\" }",
        )
        .unwrap();
        let rule = s.rules.resolve("a").unwrap();
        let rate = rule.resource.rate.unwrap();
        assert_eq!(
            (rate.algorithm, rate.burst),
            (crate::engine::Algorithm::SlidingWindow, 5)
        );
        let part = rule.partitions[0].limits.rate.unwrap();
        assert_eq!(part.algorithm, crate::engine::Algorithm::FixedWindow);
    }

    #[test]
    fn overrides_are_checked_naming_the_key() {
        let err = |overrides: &str| {
            load_str(&format!(
                "[[resources]]\nname = \"a\"\n[[resources.partitions]]\ndescriptor = \"t\"\n\
                 rate = {{ limit = 2 }}\noverrides = [{overrides}]"
            ))
            .unwrap_err()
            .to_string()
        };
        let e = err("{ value = \"x\", concurrency = 1 }, { value = \"x\", concurrency = 2 }");
        assert!(
            e.contains("partitions[0].overrides[1].value") && e.contains("twice"),
            "{e}"
        );
        let e = err("{ value = \"\", concurrency = 1 }");
        assert!(e.contains("overrides[0].value"), "{e}");
        let e = err("{ value = \"x\", rate = { limit = 0 } }");
        assert!(e.contains("overrides[0].rate.limit"), "{e}");
        let e = err("{ value = \"x\", burst = 3 }");
        assert!(e.contains("burst"), "an unknown key is named: {e}");
        // An override's shadow flag: its own, else the partition's.
        let s = load_str(
            "[[resources]]\nname = \"a\"\n[[resources.partitions]]\ndescriptor = \"t\"\n\
             rate = { limit = 2 }\nshadow = true\noverrides = [{ value = \"x\", concurrency = 1 }, \
             { value = \"y\", concurrency = 1, shadow = false }]",
        )
        .unwrap();
        let p = &s.rules.resolve("a").unwrap().partitions[0];
        assert!(p.spec_for("x").shadow && !p.spec_for("y").shadow && p.spec_for("z").shadow);
        assert_eq!(p.spec_for("x").max_in_flight, Some(1));
        assert_eq!(
            p.spec_for("z").max_in_flight,
            None,
            "the partition's own limits"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = |toml: &str| load_str(toml).unwrap_err().to_string();
        assert!(
            err("[[resources]]\nname = \"a\"\nrate = { limit = 0 }")
                .contains("resources[0] (\"a\").rate.limit")
        );
        assert!(
            err("[[resources]]\nname = \"a\"\nrate = { limit = 5, period = \"soon\" }")
                .contains("rate.period")
        );
        assert!(err("[server]\nlisten = \"nowhere\"").contains("server.listen"));
        assert!(err("[server]\nworker_threads = 5000").contains("server.worker_threads"));
        assert!(err("[server]\nlisten = 5\nbogus = 1").contains("bogus"));
        assert!(
            err("[[resources]]\nname = \"a\"\n[[resources]]\nname = \"a\"")
                .contains("declared twice")
        );
        assert!(
            err("[[resources]]\nname = \"a\"\nbreaker = { half_open_probes = 1, half_open_successes = 2 }")
                .contains("breaker.half_open_successes")
        );
        assert!(
            err("[[resources]]\nname = \"a\"\nconcurrency = 2\nadaptive = {}").contains("adaptive")
        );
        assert!(
            err("[[resources]]\nname = \"a\"\n[[resources.partitions]]\ndescriptor = \"t\"")
                .contains("partitions[0]")
        );
        assert!(
            err("[capacity]\nmax_leases = 20000000")
                .contains("capacity.max_leases: must be at most 16777216")
        );
    }

    #[test]
    fn priority_and_bypass_errors_name_the_key() {
        let err = |toml: &str| load_str(toml).unwrap_err().to_string();
        let prio = |p: &str| {
            err(&format!(
                "[[resources]]\nname = \"a\"\nconcurrency = 5\npriority = {p}"
            ))
        };
        let key = "resources[0] (\"a\").priority";
        assert!(prio("{ classes = [] }").contains(&format!("{key}.classes")));
        assert!(
            prio("{ classes = [\"x\", \"x\"] }")
                .contains(&format!("{key}.classes[1]: 'x' is named twice"))
        );
        assert!(
            prio("{ classes = [\"x\", \"y\"], default = \"z\" }")
                .contains(&format!("{key}.default"))
        );
        assert!(
            prio("{ classes = [\"x\", \"y\"], reserve = { z = 0.1 } }")
                .contains(&format!("{key}.reserve.z"))
        );
        assert!(
            prio("{ classes = [\"x\", \"y\"], reserve = { x = 1.0 } }")
                .contains(&format!("{key}.reserve.x"))
        );
        assert!(
            prio("{ classes = [\"x\", \"y\"], reserve = { x = -0.1 } }")
                .contains(&format!("{key}.reserve.x"))
        );
        assert!(
            prio("{ classes = [\"x\", \"y\"], reserve = { y = 0.1 } }").contains("lowest class")
        );
        assert!(
            prio("{ classes = [\"x\", \"y\", \"z\"], reserve = { x = 0.5, y = 0.5 } }").contains(
                &format!("{key}.reserve: reserves add up to the whole capacity")
            )
        );
        assert!(prio("{ classes = [\"x\"], bogus = 1 }").contains("bogus"));
        let over = |o: &str| {
            err(&format!(
                "[[resources]]\nname = \"a\"\n[[resources.partitions]]\ndescriptor = \"t\"\nconcurrency = 1\n\
                 overrides = [{o}]"
            ))
        };
        let okey = "resources[0] (\"a\").partitions[0].overrides[0].bypass";
        assert!(over("{ value = \"v\", bypass = true, concurrency = 2 }").contains(okey));
        assert!(over("{ value = \"v\", bypass = true, shadow = true }").contains(okey));
        let ok = load_str(
            "[[resources]]\nname = \"a\"\nconcurrency = 5\n\
             priority = { classes = [\"hi\", \"mid\", \"lo\"], reserve = { hi = 0.2, mid = 0.1 } }",
        )
        .unwrap();
        let p = ok.rules.resolve("a").unwrap().priority.clone().unwrap();
        assert_eq!(
            (p.default, p.reserve),
            (2, vec![200_000, 100_000, 0]),
            "the default is the lowest"
        );
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                // As quotad loads it: files it names are relative to its folder.
                load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "expected the three example configs, found {n}");
    }
}
