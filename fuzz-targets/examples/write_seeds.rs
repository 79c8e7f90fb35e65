//! Writes the generated seeds under `DIR/<target>/` (`fuzz/run.sh` writes them into the corpus).

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| std::io::Error::other("usage: write_seeds DIR"))?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for (target, bytes) in fuzz_targets::seeds::generated() {
        let k = counts.entry(target).or_default();
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("generated-{k}")), bytes)?;
        *k += 1;
    }
    for (target, k) in counts {
        println!("{target}: {k} seed(s)");
    }
    Ok(())
}
