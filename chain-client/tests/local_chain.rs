//! The local chain against subtensor's rules, on a real SQLite file in a temp dir. One file (about
//! 600 lines) because the cases share one helper set (a chain with a funded subnet) and read as
//! the list of rules the local chain keeps.

use blake2::{Blake2b, Digest, digest::consts::U32};
use chain_client::{
    AccountId, BlockClock, ChainError, EpochConsensus, FraudOutcome, LocalChain,
    MAX_UNREVEALED_COMMITS, SubnetParams, WeightsReveal, tlock, weights_commit_hash,
};
use parity_scale_codec::Encode;
use subxt_signer::sr25519::{Keypair, dev};

const TOKEN: u64 = 1_000_000_000;

struct Net {
    _dir: tempfile::TempDir,
    chain: LocalChain,
    netuid: u16,
}

fn id(k: &Keypair) -> AccountId {
    AccountId::from(k)
}

/// A subnet with tempo 10, Alice (uid 0) staked as the validator, Bob and Charlie (uids 1, 2) miners.
fn net(params: SubnetParams) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let chain =
        LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 1).unwrap();
    let netuid = chain.create_subnet(id(&dev::ferdie()), params).unwrap();
    for k in [dev::alice(), dev::bob(), dev::charlie()] {
        chain.fund(id(&k), 1000 * TOKEN).unwrap();
        chain.burned_register(id(&k), netuid, id(&k)).unwrap();
    }
    chain
        .add_stake(id(&dev::alice()), id(&dev::alice()), netuid, 200 * TOKEN)
        .unwrap();
    Net {
        _dir: dir,
        chain,
        netuid,
    }
}

fn params() -> SubnetParams {
    SubnetParams {
        tempo: 10,
        weights_rate_limit: 5,
        min_allowed_weights: 2,
        commit_reveal_weights_enabled: false,
        max_allowed_validators: 1,
        weights_version_key: 3,
        ..SubnetParams::default()
    }
}

#[test]
fn set_weights_enforces_subtensors_checks_with_their_names() {
    let Net { chain, netuid, .. } = &net(params());
    let alice = id(&dev::alice());
    let set = |uids: &[u16], values: &[u16], key: u64| {
        chain.set_weights_sync(alice, *netuid, uids, values, key)
    };

    // Before the first epoch nobody holds a permit.
    chain.advance_blocks(7).unwrap();
    assert!(matches!(
        set(&[1, 2], &[1, 1], 3),
        Err(ChainError::NeuronNoValidatorPermit { uid: 0, .. })
    ));
    // A lone self-weight needs no permit.
    set(&[0], &[1], 3).unwrap();

    chain.advance_blocks(3).unwrap(); // block 10: the epoch grants Alice the permit
    let e = set(&[1, 2], &[1, 1], 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SettingWeightsTooFast: last update at block 7, rate limit 5, now 10"
    );
    chain.advance_blocks(2).unwrap();
    assert!(matches!(
        chain.set_weights_sync(alice, 0, &[1], &[1], 3),
        Err(ChainError::CanNotSetRootNetworkWeights)
    ));
    assert!(matches!(
        set(&[1, 2], &[1], 3),
        Err(ChainError::WeightVecNotEqualSize {
            uids: 2,
            weights: 1
        })
    ));
    assert!(matches!(
        set(&[0, 1, 2, 3], &[1, 1, 1, 1], 3),
        Err(ChainError::UidsLengthExceedUidsInSubNet { len: 4, n: 3 })
    ));
    assert!(matches!(
        chain.set_weights_sync(id(&dev::dave()), *netuid, &[1, 2], &[1, 1], 3),
        Err(ChainError::HotKeyNotRegisteredInSubNet { .. })
    ));
    assert!(matches!(
        set(&[1, 2], &[1, 1], 2),
        Err(ChainError::IncorrectWeightVersionKey {
            given: 2,
            required: 3
        })
    ));
    assert!(matches!(
        set(&[1, 1], &[1, 1], 3),
        Err(ChainError::DuplicateUids { uid: 1 })
    ));
    assert!(matches!(
        set(&[1, 7], &[1, 1], 3),
        Err(ChainError::UidVecContainInvalidOne { uid: 7, .. })
    ));
    assert!(matches!(
        set(&[1], &[1], 3),
        Err(ChainError::WeightVecLengthIsLow { len: 1, min: 2 })
    ));
    // Bob has too little stake; with enough he still has no permit (Alice holds the only one).
    assert!(matches!(
        chain.set_weights_sync(id(&dev::bob()), *netuid, &[0, 2], &[1, 1], 3),
        Err(ChainError::NotEnoughStakeToSetWeights { stake: 0, .. })
    ));
    chain
        .add_stake(id(&dev::bob()), id(&dev::bob()), *netuid, 150 * TOKEN)
        .unwrap();
    assert!(matches!(
        chain.set_weights_sync(id(&dev::bob()), *netuid, &[0, 2], &[1, 1], 3),
        Err(ChainError::NeuronNoValidatorPermit { uid: 1, .. })
    ));

    set(&[2, 1], &[100, 50], 4).unwrap();
    let mg = chain.metagraph_sync(*netuid).unwrap();
    // Stored sorted by uid and max-upscaled.
    assert_eq!(mg.by_uid(0).unwrap().weights, vec![(1, 32768), (2, 65535)]);
    assert_eq!(mg.by_uid(0).unwrap().last_update, 12);
}

#[test]
fn commit_reveal_subnets_refuse_plain_set_weights() {
    let Net { chain, netuid, .. } = &net(SubnetParams {
        commit_reveal_weights_enabled: true,
        ..params()
    });
    let e = chain
        .set_weights_sync(id(&dev::alice()), *netuid, &[1, 2], &[1, 1], 3)
        .unwrap_err();
    assert!(matches!(e, ChainError::CommitRevealEnabled { .. }), "{e}");
}

/// The commit hash against an independent encoder: parity-scale-codec (subtensor's own) encodes the
/// tuple, blake2 hashes it. 70 salt entries take the two-byte compact length.
#[test]
fn commit_hash_is_blake2_256_of_the_scale_encoded_tuple() {
    let hotkey = id(&dev::alice());
    let (uids, values) = (vec![0u16, 1, 300], vec![65535u16, 0, 12]);
    let salt: Vec<u16> = (0..70u16).map(|i| i.wrapping_mul(997)).collect();
    let encoded = (hotkey.0, 3u16, &uids, &values, &salt, 7u64).encode();
    let expected: [u8; 32] = Blake2b::<U32>::digest(&encoded).into();
    assert_eq!(
        weights_commit_hash(&hotkey, 3, &uids, &values, &salt, 7),
        expected
    );
    // Any field changes the hash.
    assert_ne!(
        weights_commit_hash(&hotkey, 3, &uids, &values, &salt, 8),
        expected
    );
}

/// Commit-reveal v2 by subtensor's rules: tempo 10, reveal one epoch after the commit.
#[test]
fn commit_reveal_v2_reveals_in_the_next_epoch_only() {
    let Net { chain, netuid, .. } = &net(SubnetParams {
        commit_reveal_weights_enabled: true,
        ..params()
    });
    let netuid = *netuid;
    let alice = id(&dev::alice());
    let reveal = WeightsReveal {
        uids: vec![1, 2],
        values: vec![65535, 21845],
        salt: vec![9, 8, 7, 6],
        version_key: 3,
    };
    let reveal_it = |r: &WeightsReveal| chain.reveal_weights_sync(alice, netuid, r);
    assert!(matches!(
        reveal_it(&reveal).unwrap_err(),
        ChainError::NoWeightsCommitFound { .. }
    ));
    chain.advance_blocks(12).unwrap(); // epoch at 10 hands out permits; now epoch 1
    chain
        .commit_weights_sync(alice, netuid, reveal.hash(&alice, netuid))
        .unwrap();
    let e = reveal_it(&reveal).unwrap_err();
    assert!(
        matches!(e, ChainError::RevealTooEarly { epoch: 2, now: 1 }),
        "{e}"
    );
    chain.advance_blocks(10).unwrap(); // block 22, epoch 2
    let wrong_salt = WeightsReveal {
        salt: vec![9, 8, 7, 5],
        ..reveal.clone()
    };
    assert!(matches!(
        reveal_it(&wrong_salt).unwrap_err(),
        ChainError::InvalidRevealCommitHashNotMatch
    ));
    reveal_it(&reveal).unwrap();
    let mg = chain.metagraph_sync(netuid).unwrap();
    assert_eq!(mg.by_uid(0).unwrap().weights, vec![(1, 65535), (2, 21845)]);
    assert_eq!(mg.by_uid(0).unwrap().last_update, 22);
    // A commit is revealed once.
    assert!(matches!(
        reveal_it(&reveal).unwrap_err(),
        ChainError::NoWeightsCommitFound { .. }
    ));

    // A commit not revealed in its epoch expires.
    let late = WeightsReveal {
        salt: vec![1],
        ..reveal.clone()
    };
    chain
        .commit_weights_sync(alice, netuid, late.hash(&alice, netuid))
        .unwrap();
    chain.advance_blocks(20).unwrap(); // epoch 4: the reveal epoch was 3
    let e = reveal_it(&late).unwrap_err();
    assert!(
        matches!(e, ChainError::ExpiredWeightCommit { epoch: 3, now: 4 }),
        "{e}"
    );

    // At most ten unrevealed commits.
    for i in 0..MAX_UNREVEALED_COMMITS as u16 {
        chain
            .commit_weights_sync(alice, netuid, [i as u8; 32])
            .unwrap();
    }
    assert!(matches!(
        chain
            .commit_weights_sync(alice, netuid, [99; 32])
            .unwrap_err(),
        ChainError::TooManyUnrevealedCommits { pending: 10 }
    ));
    // Plain set_weights stays refused; a subnet without commit-reveal refuses commits.
    assert!(matches!(
        chain
            .set_weights_sync(alice, netuid, &[1, 2], &[1, 1], 3)
            .unwrap_err(),
        ChainError::CommitRevealEnabled { .. }
    ));
    let plain = net(params());
    assert!(matches!(
        plain
            .chain
            .commit_weights_sync(alice, plain.netuid, [0; 32])
            .unwrap_err(),
        ChainError::CommitRevealDisabled { .. }
    ));
}

/// Commit-reveal v4 on the local chain: the chain's own beacon opens each commit with the pulse of
/// its round in the reveal epoch and applies it as the committer's weights; the epoch after pays.
#[test]
fn timelocked_commits_open_with_the_beacons_pulse_in_the_reveal_epoch() {
    let Net { chain, netuid, .. } = &net(SubnetParams {
        commit_reveal_weights_enabled: true,
        ..params()
    });
    let netuid = *netuid;
    let (alice, bob, charlie) = (id(&dev::alice()), id(&dev::bob()), id(&dev::charlie()));
    chain.advance_blocks(12).unwrap(); // the epoch at 10 hands out permits; now epoch 1
    let target = chain.timelock_target_sync(netuid).unwrap();
    assert_eq!(target.reveal_round, 20, "the first block of epoch 2");
    assert_eq!(target.commit_reveal_version, 4);
    let commit = tlock::commit_weights(&target, &alice, &[1, 2], &[65535, 21845], 3).unwrap();
    let send = |who: AccountId, bytes: &[u8], round: u64, version: u16| {
        chain.commit_timelocked_weights_sync(who, netuid, bytes, round, version)
    };
    // Refused as subtensor refuses them.
    let e = send(alice, &commit, 20, 3).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::IncorrectCommitRevealVersion {
                given: 3,
                required: 4
            }
        ),
        "{e}"
    );
    let e = send(alice, &commit, 11, 4).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::InvalidRevealRound {
                round: 11,
                latest: 12
            }
        ),
        "{e}"
    );
    let e = send(alice, &vec![0; tlock::MAX_COMMIT_BYTES + 1], 20, 4).unwrap_err();
    assert!(matches!(e, ChainError::CommitTooLong { .. }), "{e}");
    let e = send(id(&dev::dave()), &commit, 20, 4).unwrap_err();
    assert!(
        matches!(e, ChainError::HotKeyNotRegisteredInSubNet { .. }),
        "{e}"
    );
    let plain = net(params());
    let e = plain
        .chain
        .commit_timelocked_weights_sync(alice, plain.netuid, &commit, 20, 4)
        .unwrap_err();
    assert!(matches!(e, ChainError::CommitRevealDisabled { .. }), "{e}");

    send(alice, &commit, 20, 4).unwrap();
    // Bob replays Alice's ciphertext as his own; Charlie commits bytes that are no ciphertext.
    send(bob, &commit, 20, 4).unwrap();
    send(charlie, &[1, 2, 3], 20, 4).unwrap();
    assert_eq!(
        chain.beacon_pulse(20).unwrap(),
        None,
        "round 20 is not public yet"
    );
    chain.advance_blocks(7).unwrap(); // block 19: still epoch 1
    assert!(chain.timelock_reveals(netuid).unwrap().is_empty());
    assert!(
        chain
            .metagraph_sync(netuid)
            .unwrap()
            .by_uid(0)
            .unwrap()
            .weights
            .is_empty()
    );

    chain.advance_blocks(1).unwrap(); // block 20: epoch 2, round 20 is signed
    let mg = chain.metagraph_sync(netuid).unwrap();
    assert_eq!(mg.by_uid(0).unwrap().weights, vec![(1, 65535), (2, 21845)]);
    assert_eq!(mg.by_uid(0).unwrap().last_update, 20);
    let reveals = chain.timelock_reveals(netuid).unwrap();
    let outcome = |who: AccountId| {
        reveals
            .iter()
            .find(|r| r.hotkey == who)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(outcome(alice), Ok(()));
    assert!(outcome(bob).unwrap_err().contains("another hotkey"));
    assert!(
        outcome(charlie)
            .unwrap_err()
            .contains("does not deserialize")
    );
    assert!(
        reveals
            .iter()
            .all(|r| r.block == 20 && r.reveal_round == 20 && r.commit_block == 12)
    );
    // The published pulse opens the commit for anyone now.
    let pulse = chain.beacon_pulse(20).unwrap().unwrap();
    assert_eq!(
        tlock::open_weights(&commit, &pulse, &alice).unwrap(),
        (vec![1, 2], vec![65535, 21845], 3)
    );
    // The epoch at 20 ran before the reveal and paid the miners nothing; the one at 30 pays them.
    let miners_paid = |block: u64| {
        let epochs = chain.epochs(netuid).unwrap();
        let (_, emission, _) = epochs.iter().find(|e| e.0 == block).unwrap().clone();
        emission[1] + emission[2]
    };
    assert_eq!(miners_paid(20), 0);
    chain.advance_blocks(10).unwrap();
    chain.metagraph_sync(netuid).unwrap();
    assert!(miners_paid(30) > 0);

    // A commit whose round comes after its reveal epoch can never open: it is dropped when the
    // epoch ends.
    let far = tlock::TimelockTarget {
        reveal_round: 1_000,
        ..chain.timelock_target_sync(netuid).unwrap()
    };
    let commit = tlock::commit_weights(&far, &alice, &[1, 2], &[1, 1], 3).unwrap();
    send(alice, &commit, 1_000, 4).unwrap(); // block 30, epoch 3: to reveal in epoch 4
    chain.advance_blocks(20).unwrap(); // block 50, epoch 5
    chain.metagraph_sync(netuid).unwrap();
    let last = chain.timelock_reveals(netuid).unwrap().pop().unwrap();
    assert!(last.outcome.unwrap_err().starts_with("expired"));
    assert_eq!(
        last.block, 50,
        "dropped at the first block after its reveal epoch"
    );
}

#[test]
fn epochs_run_once_per_tempo_and_pay_the_emission_out() {
    let Net { chain, netuid, .. } = &net(params());
    chain.advance_blocks(10).unwrap(); // epoch at 10: permits
    chain.metagraph_sync(*netuid).unwrap();
    chain.advance_blocks(1).unwrap();
    chain
        .set_weights_sync(id(&dev::alice()), *netuid, &[1, 2], &[65535, 21845], 3)
        .unwrap();
    // Skip three tempo boundaries at once: each epoch still runs, exactly once.
    chain.advance_blocks(30).unwrap();
    let mg = chain.metagraph_sync(*netuid).unwrap();
    let epochs = chain.epochs(*netuid).unwrap();
    let blocks: Vec<u64> = epochs.iter().map(|e| e.0).collect();
    assert_eq!(blocks, vec![10, 20, 30, 40]);
    // Reading again runs nothing new.
    chain.metagraph_sync(*netuid).unwrap();
    assert_eq!(chain.epochs(*netuid).unwrap().len(), 4);

    let per_epoch = params().emission_per_block * 10;
    let cut = (per_epoch as u128 * params().owner_cut as u128 / 65535) as u64;
    for (_, emission, owner_cut) in &epochs[1..] {
        assert_eq!(*owner_cut, cut);
        let paid: u64 = emission.iter().sum();
        assert!(
            per_epoch - cut - paid <= 3,
            "rounding loses at most a rao per uid"
        );
    }
    // Miners split their half 3:1 as weighted; the validator takes the other half as dividends.
    let (bob, charlie) = (mg.by_uid(1).unwrap(), mg.by_uid(2).unwrap());
    assert!(bob.total_emission > 0 && charlie.total_emission > 0);
    let ratio = bob.emission as f64 / charlie.emission as f64;
    assert!((ratio - 3.0).abs() < 1e-3, "ratio {ratio}");
    assert!(mg.by_uid(0).unwrap().dividends > 60000);
    // The owner cut went to the owner's coldkey.
    assert_eq!(chain.balance(id(&dev::ferdie())).unwrap(), 4 * cut);
}

#[test]
fn under_null_consensus_the_top_stake_row_alone_pays_the_miners() {
    let Net { chain, netuid, .. } = &net(SubnetParams {
        epoch_consensus: EpochConsensus::Null,
        max_allowed_validators: 2,
        stake_threshold: 0,
        ..params()
    });
    let dave = dev::dave();
    chain.fund(id(&dave), 1000 * TOKEN).unwrap();
    chain
        .burned_register(id(&dave), *netuid, id(&dave))
        .unwrap();
    chain
        .add_stake(id(&dave), id(&dave), *netuid, 100 * TOKEN)
        .unwrap();
    chain.advance_blocks(10).unwrap(); // epoch at 10: permits for Alice (uid 0) and Dave (uid 3)
    let mg = chain.metagraph_sync(*netuid).unwrap();
    assert_eq!(mg.null_consensus_winner().map(|n| n.uid), Some(0));
    chain.advance_blocks(1).unwrap();
    chain
        .set_weights_sync(id(&dev::alice()), *netuid, &[1, 2], &[65535, 21845], 3)
        .unwrap();
    // Dave's opposite row counts for nothing: Null takes no median.
    chain
        .set_weights_sync(id(&dave), *netuid, &[1, 2], &[1, 65535], 3)
        .unwrap();
    chain.advance_blocks(10).unwrap();
    let mg = chain.metagraph_sync(*netuid).unwrap();
    let emission = |uid: u16| mg.by_uid(uid).unwrap().emission as f64;
    let ratio = emission(1) / emission(2);
    assert!((ratio - 3.0).abs() < 1e-3, "ratio {ratio}");
    // Validators split their half by stake (about 2:1, grown by an epoch's dividends).
    let (alice, dave) = (emission(0), emission(3));
    assert!((alice / dave - 2.0).abs() < 0.2, "{alice} {dave}");
    let miners = emission(1) + emission(2);
    assert!(((alice + dave) / miners - 1.0).abs() < 1e-6);
}

#[test]
fn registration_burns_and_prunes_the_lowest_emission_outside_immunity() {
    let params = SubnetParams {
        max_allowed_uids: 3,
        immunity_period: 15,
        ..params()
    };
    let Net { chain, netuid, .. } = &net(params.clone());
    let dave = dev::dave();
    assert!(matches!(
        chain.burned_register(id(&dave), *netuid, id(&dave)),
        Err(ChainError::NotEnoughBalanceToStake { .. })
    ));
    chain.fund(id(&dave), 10 * TOKEN).unwrap();
    // Everyone is inside the immunity period.
    assert!(matches!(
        chain.burned_register(id(&dave), *netuid, id(&dave)),
        Err(ChainError::NoNeuronIdAvailable { .. })
    ));
    chain.advance_blocks(10).unwrap();
    chain.metagraph_sync(*netuid).unwrap();
    chain.advance_blocks(1).unwrap();
    chain
        .set_weights_sync(id(&dev::alice()), *netuid, &[1, 2], &[65535, 100], 3)
        .unwrap();
    chain.advance_blocks(10).unwrap(); // epoch 20: Charlie earns less than Bob
    let uid = chain
        .burned_register(id(&dave), *netuid, id(&dave))
        .unwrap();
    assert_eq!(uid, 2, "the lowest emission outside immunity is replaced");
    let mg = chain.metagraph_sync(*netuid).unwrap();
    assert_eq!(mg.by_uid(2).unwrap().hotkey, id(&dave));
    assert_eq!(chain.balance(id(&dave)).unwrap(), 10 * TOKEN - params.burn);
    assert!(matches!(
        chain.burned_register(id(&dave), *netuid, id(&dave)),
        Err(ChainError::HotKeyAlreadyRegisteredInSubNet { uid: 2, .. })
    ));
}

/// Two handles on one file, as two processes would have: epochs still run exactly once.
#[test]
fn concurrent_handles_share_one_chain() {
    let n = net(params());
    let path = n.chain.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let chain = LocalChain::open(&path).unwrap();
                for _ in 0..25 {
                    chain.advance_blocks(1).unwrap();
                    chain.metagraph_sync(1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let blocks: Vec<u64> = n
        .chain
        .epochs(n.netuid)
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(blocks, (1..=10).map(|i| i * 10).collect::<Vec<_>>());
}

/// Fraud, a local-chain extension: only recently closed windows can be reported, each reporter
/// once per miner and window; reports within the span add up to a quorum of the permitted stake,
/// the slash burns all of the miner's stake, and its emission is burned until the span has passed.
/// Miners that earn stay below the stake threshold and get no validator permit.
#[test]
fn fraud_quorum_over_recent_windows_slashes_once_and_burns_emission() {
    let Net { chain, netuid, .. } = &net(SubnetParams {
        max_allowed_validators: 2,
        min_allowed_weights: 1,
        fraud_report_windows: 3,
        ..params()
    });
    let (alice, bob, dave) = (id(&dev::alice()), id(&dev::bob()), id(&dev::dave()));
    chain.fund(dave, 1000 * TOKEN).unwrap();
    chain.burned_register(dave, *netuid, dave).unwrap();
    chain.add_stake(dave, dave, *netuid, 300 * TOKEN).unwrap();
    chain.advance_blocks(10).unwrap(); // permits for Alice (200) and Dave (300)
    for validator in [alice, dave] {
        chain
            .set_weights_sync(validator, *netuid, &[1, 2], &[1, 1], 3)
            .unwrap();
    }
    chain.advance_blocks(10).unwrap(); // block 20: window 2 is open, windows 0 and 1 closed
    let mg = chain.metagraph_sync(*netuid).unwrap();
    let earned = mg.by_uid(1).unwrap().stake;
    assert!(earned > 0 && !mg.by_uid(1).unwrap().validator_permit);
    assert!(!mg.by_uid(2).unwrap().validator_permit);

    let report =
        |reporter, window| chain.report_fraud_sync(reporter, *netuid, bob, window, [7; 32]);
    assert!(matches!(
        report(alice, 2),
        Err(ChainError::FraudReportOutOfRange {
            window: 2,
            first: 0,
            last: 1
        })
    ));
    // Dave alone holds 60% of the permitted stake, short of the quorum (two thirds: no validator
    // with less slashes alone); a second report of his changes nothing.
    assert!(matches!(
        report(dave, 1).unwrap(),
        FraudOutcome::Recorded { .. }
    ));
    assert_eq!(report(dave, 1).unwrap(), FraudOutcome::AlreadyHandled);
    assert_eq!(
        chain
            .metagraph_sync(*netuid)
            .unwrap()
            .by_uid(1)
            .unwrap()
            .stake,
        earned
    );
    // Alice's report of another recent window makes the quorum: everything Bob holds is burned.
    assert_eq!(
        report(alice, 0).unwrap(),
        FraudOutcome::Slashed { amount: earned }
    );
    assert_eq!(report(alice, 1).unwrap(), FraudOutcome::AlreadyHandled);
    let slashes = chain.slashes(*netuid).unwrap();
    assert_eq!(slashes.len(), 1);
    assert_eq!((slashes[0].hotkey, slashes[0].reporters.len()), (bob, 2));

    // The weights still name Bob, but his emission is burned while the slash is recent.
    chain.advance_blocks(10).unwrap();
    let mg = chain.metagraph_sync(*netuid).unwrap();
    assert_eq!(mg.by_uid(1).unwrap().stake, 0);
    assert_eq!(mg.by_uid(1).unwrap().emission, 0);
    assert!(mg.by_uid(2).unwrap().emission > 0);
    // Long after, window 0 can no longer be reported.
    chain.advance_blocks(40).unwrap();
    assert!(matches!(
        report(alice, 0),
        Err(ChainError::FraudReportOutOfRange { .. })
    ));
}

#[test]
fn a_balance_never_passes_what_the_chain_can_hold() {
    let Net { chain, .. } = &net(params());
    let dave = dev::dave();
    assert!(matches!(
        chain.fund(id(&dave), u64::MAX),
        Err(ChainError::BalanceOverflow { .. })
    ));
    assert_eq!(chain.balance(id(&dave)).unwrap(), 0);
    chain.fund(id(&dave), i64::MAX as u64 - 5).unwrap();
    let err = chain.fund(id(&dave), 6).unwrap_err();
    assert!(err.to_string().starts_with("Overflow:"), "{err}");
    assert_eq!(chain.balance(id(&dave)).unwrap(), i64::MAX as u64 - 5);
    chain.fund(id(&dave), 5).unwrap();
    assert_eq!(chain.balance(id(&dave)).unwrap(), i64::MAX as u64);
}

#[test]
fn an_owner_sets_the_tempo_and_triggers_epochs_and_timelocked_commits_follow() {
    let Net { chain, netuid, .. } = &net(SubnetParams {
        commit_reveal_weights_enabled: true,
        ..params()
    });
    let netuid = *netuid;
    let (alice, owner) = (id(&dev::alice()), id(&dev::ferdie()));
    chain.advance_blocks(12).unwrap(); // the epoch at 10 hands out permits; now epoch 1
    let p = chain.epoch_pipeline(netuid).unwrap();
    assert_eq!(
        (p.last_epoch_block, p.epoch_index, p.next_epoch_block()),
        (10, 1, 20)
    );

    let e = chain.set_tempo_sync(alice, netuid, 400).unwrap_err();
    assert!(matches!(e, ChainError::NotSubnetOwner { .. }), "{e}");
    for tempo in [359, 50_401] {
        let e = chain.set_tempo_sync(owner, netuid, tempo).unwrap_err();
        assert!(matches!(e, ChainError::TempoOutOfRange { .. }), "{e}");
    }
    let e = chain.trigger_epoch_sync(alice, netuid).unwrap_err();
    assert!(matches!(e, ChainError::NotSubnetOwner { .. }), "{e}");

    // A longer tempo counts from the last epoch: the next one runs at 410, not 20.
    assert_eq!(
        chain
            .set_tempo_sync(owner, netuid, 400)
            .unwrap()
            .next_epoch_block(),
        410
    );
    let target = chain.timelock_target_sync(netuid).unwrap();
    assert_eq!(target.reveal_round, 410, "the first block of epoch 2");
    let commit = tlock::commit_weights(&target, &alice, &[1, 2], &[65535, 21845], 3).unwrap();
    chain
        .commit_timelocked_weights_sync(alice, netuid, &commit, 410, 4)
        .unwrap();
    chain.advance_blocks(397).unwrap(); // block 409: still epoch 1
    assert!(chain.timelock_reveals(netuid).unwrap().is_empty());
    assert_eq!(chain.epochs(netuid).unwrap().len(), 1);
    chain.advance_blocks(1).unwrap(); // block 410: epoch 2, the commit opens
    let mg = chain.metagraph_sync(netuid).unwrap();
    assert_eq!(mg.by_uid(0).unwrap().weights, vec![(1, 65535), (2, 21845)]);
    let reveal = chain.timelock_reveals(netuid).unwrap().pop().unwrap();
    assert_eq!((reveal.block, reveal.outcome), (410, Ok(())));
    // The epoch at 410 paid the 400 blocks since the one at 10.
    let epochs = chain.epochs(netuid).unwrap();
    assert_eq!(
        epochs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![10, 410]
    );
    let per_epoch = params().emission_per_block * 400;
    assert_eq!(
        epochs[1].2,
        (per_epoch as u128 * params().owner_cut as u128 / 65535) as u64
    );
    // Fraud reports keep numbering the task's windows of 10 blocks.
    assert_eq!(mg.params.window_of(410), 41);

    // A triggered epoch runs at the next block and the tempo counts from it.
    chain.advance_blocks(10).unwrap(); // block 420
    assert_eq!(
        chain
            .trigger_epoch_sync(owner, netuid)
            .unwrap()
            .next_epoch_block(),
        421
    );
    let target = chain.timelock_target_sync(netuid).unwrap();
    assert_eq!(target.reveal_round, 421, "epoch 3 now starts at 421");
    chain.advance_blocks(1).unwrap();
    let p = chain.epoch_pipeline(netuid).unwrap();
    assert_eq!(
        (p.last_epoch_block, p.epoch_index, p.next_epoch_block()),
        (421, 3, 821)
    );
    assert_eq!(
        chain.timelock_target_sync(netuid).unwrap().reveal_round,
        821
    );

    // A shorter tempo whose epoch has already passed runs it at the next block.
    chain.advance_blocks(379).unwrap(); // block 800, 379 blocks after the last epoch
    assert_eq!(
        chain
            .set_tempo_sync(owner, netuid, 360)
            .unwrap()
            .next_epoch_block(),
        801
    );
    chain.advance_blocks(361).unwrap(); // block 1161
    let blocks: Vec<u64> = chain.epochs(netuid).unwrap().iter().map(|e| e.0).collect();
    assert_eq!(blocks, vec![10, 410, 421, 801, 1161]);
    assert_eq!(chain.epoch_pipeline(netuid).unwrap().epoch_index, 5);
}

#[test]
fn hash_commits_count_epochs_by_the_stored_index() {
    let Net { chain, netuid, .. } = &net(SubnetParams {
        commit_reveal_weights_enabled: true,
        commit_reveal_version: 2,
        ..params()
    });
    let (netuid, alice, owner) = (*netuid, id(&dev::alice()), id(&dev::ferdie()));
    chain.advance_blocks(12).unwrap(); // epoch 1
    chain.set_tempo_sync(owner, netuid, 400).unwrap(); // epoch 2 at 410
    let reveal = WeightsReveal {
        uids: vec![1, 2],
        values: vec![65535, 21845],
        salt: vec![7; 8],
        version_key: 3,
    };
    chain
        .commit_weights_sync(alice, netuid, reveal.hash(&alice, netuid))
        .unwrap();
    // Block 25 would be epoch 2 at the old tempo; the stored schedule says epoch 1 still.
    chain.advance_blocks(13).unwrap();
    let e = chain
        .reveal_weights_sync(alice, netuid, &reveal)
        .unwrap_err();
    assert!(
        matches!(e, ChainError::RevealTooEarly { epoch: 2, now: 1 }),
        "{e}"
    );
    chain.advance_blocks(385).unwrap(); // block 410: epoch 2
    chain.reveal_weights_sync(alice, netuid, &reveal).unwrap();
}

#[test]
fn a_chain_file_from_before_the_stored_pipeline_keeps_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.sqlite");
    let chain = LocalChain::open_or_create(&path, BlockClock::Manual, 1).unwrap();
    chain.advance_blocks(13).unwrap();
    let netuid = chain.create_subnet(id(&dev::ferdie()), params()).unwrap();
    chain.advance_blocks(12).unwrap(); // block 25: the epoch at 20 ran
    let second = chain.create_subnet(id(&dev::ferdie()), params()).unwrap(); // at 25
    drop(chain);
    // The file as the chain kept it before: no index, no pending epoch.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "ALTER TABLE subnets DROP COLUMN epoch_index; ALTER TABLE subnets DROP COLUMN pending_epoch_at;",
    )
    .unwrap();
    drop(conn);
    let chain = LocalChain::open(&path).unwrap();
    let p = chain.epoch_pipeline(netuid).unwrap();
    assert_eq!(
        (p.last_epoch_block, p.epoch_index, p.next_epoch_block()),
        (20, 2, 30)
    );
    let p = chain.epoch_pipeline(second).unwrap();
    assert_eq!(
        (p.last_epoch_block, p.epoch_index, p.next_epoch_block()),
        (25, 2, 30)
    );
}
