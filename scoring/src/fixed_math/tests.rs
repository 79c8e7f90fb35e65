use super::*;

fn f(x: f64) -> Fixed {
    Fixed::from_num(x)
}

fn fs(v: &[f64]) -> Vec<Fixed> {
    v.iter().map(|&x| f(x)).collect()
}

fn median(stake: &[f64], score: &[f64], majority: f64) -> Fixed {
    let mut stake = fs(stake);
    inplace_normalize(&mut stake);
    let total = sum(&stake);
    let idx: Vec<usize> = (0..stake.len()).collect();
    weighted_median(&stake, &fs(score), &idx, total - f(majority), zero(), total)
}

/// Public vectors from subtensor's math tests (REFERENCE.md).
#[test]
fn weighted_median_vectors() {
    assert_eq!(median(&[0.49, 0.01, 0.5], &[0.5, 0.7, 1.0], 0.51), f(0.7));
    assert_eq!(median(&[0.2; 5], &[0.8, 0.2, 1.0, 0.6, 0.4], 0.51), f(0.6));
    assert_eq!(median(&[0.51, 0.49], &[0.5, 1.0], 0.51), f(0.5));
    assert_eq!(median(&[0.49, 0.51], &[0.5, 1.0], 0.51), f(1.0));
}

#[test]
fn column_median_vectors() {
    let rows = [
        [0.0, 0.1, 0.0],
        [0.0, 0.2, 0.4],
        [0.0, 0.3, 0.1],
        [0.0, 0.4, 0.5],
    ];
    let sparse: SparseMatrix = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .filter(|(_, v)| **v > 0.0)
                .map(|(j, &v)| (j as u16, f(v)))
                .collect()
        })
        .collect();
    let stake = fs(&[0.0, 0.75, 0.25, 0.0]);
    for (majority, expected) in [
        (0.24, [0.0, 0.3, 0.4]),
        (0.26, [0.0, 0.2, 0.4]),
        (0.76, [0.0, 0.2, 0.1]),
    ] {
        assert_eq!(
            weighted_median_col_sparse(&stake, &sparse, 3, f(majority)),
            fs(&expected),
            "majority {majority}"
        );
    }
}

#[test]
fn column_clip_vector() {
    let m: SparseMatrix = [
        [0.0, 2.0, 3.0],
        [4.0, 5.0, 6.0],
        [7.0, 8.0, 9.0],
        [10.0, 11.0, 12.0],
    ]
    .iter()
    .map(|r| {
        r.iter()
            .enumerate()
            .map(|(j, &v)| (j as u16, f(v)))
            .collect()
    })
    .collect();
    let clipped = col_clip_sparse(&m, &fs(&[0.0, 5.0, 12.0]));
    let dense: Vec<Vec<f64>> = clipped
        .iter()
        .map(|row| {
            let mut d = vec![0.0; 3];
            for &(j, v) in row {
                d[j as usize] = v.to_num::<f64>();
            }
            d
        })
        .collect();
    assert_eq!(
        dense,
        vec![
            vec![0.0, 2.0, 3.0],
            vec![0.0, 5.0, 6.0],
            vec![0.0, 5.0, 9.0],
            vec![0.0, 5.0, 12.0]
        ]
    );
}

#[test]
fn max_upscale_vector() {
    let v = fs(&[
        0.000001, 0.000006, 0.000007, 0.0001, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4,
    ]);
    assert_eq!(
        max_upscale_to_u16(&v),
        vec![0, 1, 1, 16, 164, 1638, 16384, 32768, 49151, 65535]
    );
}
