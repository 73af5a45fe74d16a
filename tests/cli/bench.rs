//! `pfs bench`: prints one row per cache capacity with throughput and hit rate.

use crate::util::{pfs, workdir};

fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn bench_prints_a_row_per_capacity_and_a_big_cache_hits_on_reread() {
    let dir = workdir();
    let run = pfs(
        dir.path(),
        &[
            "bench",
            "--size",
            "1MiB",
            "--pattern",
            "reread",
            "--working-set",
            "256KiB",
            "--ops",
            "640",
            "--cache",
            "1,128",
        ],
    )
    .ok();
    let rows = rows(&run.stdout);
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert_eq!(rows[0][0], "1");
    assert_eq!(rows[1][0], "128");
    let hit = |row: &Vec<String>| {
        row.iter().find(|c| c.ends_with('%')).unwrap().trim_end_matches('%').parse::<f64>().unwrap()
    };
    // 64 data nodes read 10 times: with 128 nodes only the first pass misses.
    assert!(hit(&rows[1]) > 80.0, "{}", run.stdout);
    assert!(hit(&rows[0]) < hit(&rows[1]), "{}", run.stdout);
}

#[test]
fn bench_writes_to_a_file_backing_with_every_pattern() {
    let dir = workdir();
    let backing = format!("file:{}", dir.path().display());
    for pattern in ["sequential", "random", "strided", "reread"] {
        let run = pfs(
            dir.path(),
            &[
                "bench",
                "--write",
                "--size",
                "512KiB",
                "--pattern",
                pattern,
                "--ops",
                "50",
                "--cache",
                "2,48",
                "--backing",
                &backing,
            ],
        )
        .ok();
        let rows = rows(&run.stdout);
        assert_eq!(rows.len(), 2, "{pattern}: {}", run.stdout);
        let flushes: u64 = rows[0][6].parse().unwrap();
        assert!(flushes >= 1, "{pattern}: writes must flush: {}", run.stdout);
    }
    let run = pfs(dir.path(), &["bench", "--size", "1KiB", "--io-size", "4KiB"]).fails();
    assert!(run.stderr.contains("larger than --size"), "{}", run.stderr);
    let run = pfs(dir.path(), &["bench", "--size", "12 parsecs"]);
    assert_eq!(run.code, 2);
}
