//! A real public tabular data set shipped inside a crate (linfa-datasets): rows of numeric
//! features and a class label. Rows are shuffled once by a seed from the task file, so the split
//! does not follow the file's order, and features are standardized with the training rows' means and
//! standard deviations. Page `i` is rows `[i * page_len, (i + 1) * page_len)` of the shuffled table;
//! the training pages come first and the held-out pages right after them, as for text.

use crate::rng::{SeededRng, salt};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// The data sets that ship inside linfa-datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableSource {
    /// Red wine quality (Cortez et al., 2009; UCI): 1,599 wines, 11 physico-chemical features, the
    /// quality grade 3..=8 as six classes.
    WineQuality,
    /// Fisher's iris: 150 flowers, 4 measurements, 3 species.
    Iris,
}

impl TableSource {
    pub fn name(self) -> &'static str {
        match self {
            TableSource::WineQuality => "wine-quality",
            TableSource::Iris => "iris",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub source: TableSource,
    /// Seed of the one shuffle of the rows.
    pub shuffle_seed: u64,
    /// The table, loaded once: validation and the engine share it (clones of the spec too).
    #[serde(skip)]
    loaded: Loaded,
}

/// A memo of the loaded table with what it was loaded for (source, seed, training rows); not part
/// of what the spec says, so it compares equal.
#[derive(Clone, Debug, Default)]
struct Loaded(Arc<Mutex<Option<(LoadedFor, TableCorpus)>>>);

/// What a table was loaded for: its source, its shuffle seed and its training rows.
type LoadedFor = (TableSource, u64, usize);

impl PartialEq for Loaded {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl TableSpec {
    /// The table standardized on its first `train_rows` rows (`TableCorpus::load`), loaded on
    /// first use.
    pub fn corpus(&self, train_rows: usize) -> TableCorpus {
        let key = (self.source, self.shuffle_seed, train_rows);
        let mut memo = self.loaded.0.lock().unwrap_or_else(|e| e.into_inner());
        match memo.as_ref() {
            Some((loaded, table)) if *loaded == key => table.clone(),
            _ => {
                let table = TableCorpus::load(self, train_rows);
                *memo = Some((key, table.clone()));
                table
            }
        }
    }
}

/// The shuffled, standardized table.
#[derive(Clone, Debug)]
pub struct TableCorpus {
    inner: Arc<Table>,
}

#[derive(Debug)]
struct Table {
    features: usize,
    /// The original label of each class, in class order.
    labels: Vec<usize>,
    /// Row-major standardized features, `features` per row.
    values: Vec<f32>,
    classes: Vec<i32>,
}

impl TableCorpus {
    /// Loads `spec`'s data set, shuffles it, and standardizes each feature with the statistics of
    /// the first `train_rows` rows (the training split).
    pub fn load(spec: &TableSpec, train_rows: usize) -> Self {
        let dataset = match spec.source {
            TableSource::WineQuality => linfa_datasets::winequality(),
            TableSource::Iris => linfa_datasets::iris(),
        };
        let (rows, features) = dataset.records.dim();
        let raw: Vec<f64> = dataset.records.iter().copied().collect();
        let targets: Vec<usize> = dataset.targets.iter().copied().collect();
        let mut labels = targets.clone();
        labels.sort_unstable();
        labels.dedup();

        let mut order: Vec<usize> = (0..rows).collect();
        let mut rng = SeededRng::derived(&[spec.shuffle_seed, salt::TABLE_ROWS]);
        for i in (1..rows).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }

        let fit = train_rows.clamp(1, rows);
        let (mut mean, mut std) = (vec![0.0f64; features], vec![0.0f64; features]);
        for &r in &order[..fit] {
            for f in 0..features {
                mean[f] += raw[r * features + f] / fit as f64;
            }
        }
        for &r in &order[..fit] {
            for f in 0..features {
                std[f] += (raw[r * features + f] - mean[f]).powi(2) / fit as f64;
            }
        }
        let std: Vec<f64> = std
            .iter()
            .map(|v| if *v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();

        let mut values = Vec::with_capacity(rows * features);
        let mut classes = Vec::with_capacity(rows);
        for &r in &order {
            values
                .extend((0..features).map(|f| ((raw[r * features + f] - mean[f]) / std[f]) as f32));
            let class = labels
                .binary_search(&targets[r])
                .expect("a label of the table");
            classes.push(class as i32);
        }
        Self {
            inner: Arc::new(Table {
                features,
                labels,
                values,
                classes,
            }),
        }
    }

    pub fn rows(&self) -> usize {
        self.inner.classes.len()
    }

    pub fn features(&self) -> usize {
        self.inner.features
    }

    pub fn classes(&self) -> usize {
        self.inner.labels.len()
    }

    /// The data set's own label of each class, in class order.
    pub fn labels(&self) -> &[usize] {
        &self.inner.labels
    }

    /// Standardized features and class of row `row` of the shuffled table.
    pub fn row(&self, row: usize) -> (&[f32], i32) {
        let t = &self.inner;
        (
            &t.values[row * t.features..(row + 1) * t.features],
            t.classes[row],
        )
    }

    /// The loss of a model that ignores the features and predicts the classes' frequencies in
    /// `rows`: the entropy of the class distribution there, in nats. A classifier that learned
    /// anything scores below it.
    pub fn prior_entropy(&self, rows: std::ops::Range<usize>) -> f64 {
        let mut counts = vec![0usize; self.classes()];
        for r in rows.clone() {
            counts[self.inner.classes[r] as usize] += 1;
        }
        let n = rows.len() as f64;
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wine_quality_loads_shuffled_and_standardized() {
        let spec = TableSpec {
            source: TableSource::WineQuality,
            shuffle_seed: 7,
            loaded: Loaded::default(),
        };
        let table = TableCorpus::load(&spec, 1200);
        assert_eq!((table.rows(), table.features()), (1599, 11));
        assert_eq!(table.labels(), [3, 4, 5, 6, 7, 8]);
        // Standardized on the training rows: mean 0 and variance 1 there.
        for f in 0..11 {
            let column: Vec<f64> = (0..1200).map(|r| table.row(r).0[f] as f64).collect();
            let mean = column.iter().sum::<f64>() / 1200.0;
            let var = column.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 1200.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "{f}: {mean} {var}"
            );
        }
        // The same seed gives the same table, another seed another order.
        assert_eq!(table.row(5), TableCorpus::load(&spec, 1200).row(5));
        let other = TableCorpus::load(
            &TableSpec {
                shuffle_seed: 8,
                ..spec
            },
            1200,
        );
        assert_ne!(table.row(5), other.row(5));
        let h = table.prior_entropy(0..1599);
        assert!(h > 0.9 && h < 6f64.ln(), "{h}");
    }

    #[test]
    fn iris_loads_with_three_balanced_classes() {
        let spec = TableSpec {
            source: TableSource::Iris,
            shuffle_seed: 1,
            loaded: Loaded::default(),
        };
        let table = TableCorpus::load(&spec, 120);
        assert_eq!(
            (table.rows(), table.features(), table.classes()),
            (150, 4, 3)
        );
        // 50 flowers of each species: the class prior over all rows is ln 3.
        assert!((table.prior_entropy(0..150) - 3f64.ln()).abs() < 1e-12);
    }
}
