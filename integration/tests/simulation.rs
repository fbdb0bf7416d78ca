//! The simulation as CI runs it: `skiff sim` over a fixed set of seeds (the real control
//! plane with hollow nodes, a seeded schedule of actions and injected panics), every
//! invariant held after every step and the cluster converged after the schedule; and a
//! seed names its schedule, printed for replay when it fails.

use std::process::Command;

use skiff_integration::skiff_bin;

#[test]
fn fixed_seeds_keep_every_invariant_and_converge() {
    let out = Command::new(skiff_bin())
        .args([
            "sim", "--seed", "1", "--seeds", "3", "--steps", "30", "--nodes", "3",
        ])
        .env("SKIFF_LOG", "error")
        .output()
        .expect("run skiff sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "skiff sim failed:\n{stdout}\n{stderr}"
    );
    for seed in 1..=3 {
        assert!(
            stdout.contains(&format!(
                "seed {seed}: 30 steps, invariants held, converged"
            )),
            "{stdout}"
        );
    }
}

/// A known-bad cluster: a second replication controller beside the first, as two
/// controller-managers without leader election would run. The invariants catch it, the
/// failure names its seed and how to replay it, and the replay fails again.
#[test]
fn a_known_bad_cluster_is_caught_and_its_seed_replays_it() {
    let run = |args: &[&str], env_seed: Option<&str>| {
        let mut cmd = Command::new(skiff_bin());
        cmd.arg("sim").args(args).env("SKIFF_LOG", "off");
        match env_seed {
            Some(s) => cmd.env("SKIFF_SIM_SEED", s),
            None => cmd.env_remove("SKIFF_SIM_SEED"),
        };
        let out = cmd.output().expect("run skiff sim");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, stderr) = run(
        &["--seed", "1", "--steps", "30", "--rogue-replication"],
        None,
    );
    assert!(!ok, "two replication controllers went unnoticed:\n{stderr}");
    assert!(stderr.contains("live pods, more than the"), "{stderr}");
    let replay = "SKIFF_SIM_SEED=1 skiff sim --steps 30 --nodes 3 --rogue-replication";
    assert!(stderr.contains(replay), "{stderr}");
    // The replay, as printed: the seed from the environment.
    let (ok, again) = run(
        &["--steps", "30", "--nodes", "3", "--rogue-replication"],
        Some("1"),
    );
    assert!(!ok, "the replay passed:\n{again}");
    assert!(again.contains("seed 1 broke the invariants"), "{again}");
}
