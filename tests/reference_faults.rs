//! Each fault of the reference design (`shared/reference/known-faults.md`, F1-F9), set up
//! with real threads and shown not to happen here. Gates hold fsyncs open so the scenario
//! is the same on every run; the interleavings inside each scenario are explored
//! exhaustively by tests/loom.rs and at random by tests/shuttle.rs.

mod common;

use common::{eventually, run, Gate};
use group_commit::{Config, FsyncManager, GroupCommit};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// So that a passing test shows the hand-off, not the safety net.
fn no_timeouts() -> Config {
    Config::builder()
        .waiter_timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn manager(config: Config) -> Arc<FsyncManager> {
    Arc::new(FsyncManager::with_config(config))
}

/// A call on its own thread whose fsync waits at `gate` and then returns `result`.
fn gated_fsync(
    m: &Arc<FsyncManager>,
    gate: &Gate,
    result: fn() -> io::Result<()>,
) -> common::Running<io::Result<()>> {
    let (m, gate) = (Arc::clone(m), gate.clone());
    run(move || {
        m.fsync(|| {
            gate.pass();
            result()
        })
    })
}

/// A call on its own thread whose fsync (if it leads) counts itself in `ran`.
fn counted_fsync(m: &Arc<FsyncManager>, ran: &Arc<AtomicUsize>) -> common::Running<io::Result<()>> {
    let (m, ran) = (Arc::clone(m), Arc::clone(ran));
    run(move || {
        m.fsync(|| {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    })
}

fn waiting(m: &FsyncManager) -> u64 {
    m.stats().waiting
}

/// F1, lost hand-off. The reference sends the hand-off as a bare notify that a waiter
/// not yet asleep misses. Here joining the next group and falling asleep are one
/// critical section, and the hand-off is the phase `Idle` set under the lock, so a
/// leader that finishes the moment a waiter has joined still hands off.
#[test]
fn f1_hand_off_reaches_a_waiter_that_just_joined() {
    let m = manager(no_timeouts());
    let gate = Gate::new();
    let leader = gated_fsync(&m, &gate, || Ok(()));
    gate.wait_arrivals(1);

    let ran = Arc::new(AtomicUsize::new(0));
    let waiter = counted_fsync(&m, &ran);
    eventually("the waiter has joined", || waiting(&m) == 1);
    gate.open();

    leader.value().unwrap();
    waiter.value().unwrap();
    // The waiter arrived during the first fsync, so it needed a second one, which it led
    // itself after the hand-off, without waiting out its (one hour) timeout.
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let stats = m.stats();
    assert_eq!((stats.fsyncs, stats.timeouts), (2, 0));
}

/// F2, orphaned group. The reference lets a promoted waiter replace the group that
/// newer arrivals joined. Here a group formed behind a promoted leader is offered the
/// lead in its turn: never lost, and never offered to the group the finishing fsync
/// just served.
#[test]
fn f2_a_group_behind_a_promoted_leader_is_served() {
    let m = manager(no_timeouts());
    let first = Gate::new();
    let l0 = gated_fsync(&m, &first, || Ok(()));
    first.wait_arrivals(1);

    // T1 and R wait behind L0: one takes the lead, the other rides its fsync, which is
    // held at a second gate.
    let second = Gate::new();
    let t1 = gated_fsync(&m, &second, || Ok(()));
    let r = gated_fsync(&m, &second, || Ok(()));
    eventually("T1 and R have joined", || waiting(&m) == 2);
    first.open();
    second.wait_arrivals(1);

    // T2 and T4 form the group behind the promoted leader, while its companion rides.
    let ran = Arc::new(AtomicUsize::new(0));
    let t2 = counted_fsync(&m, &ran);
    let t4 = counted_fsync(&m, &ran);
    eventually("T2 and T4 have joined", || waiting(&m) == 3);
    second.open();

    for call in [l0, t1, r, t2, t4] {
        call.value().unwrap();
    }
    // One of T2 and T4 led; the other rode its fsync. Nobody was left to a timeout.
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let stats = m.stats();
    assert_eq!(
        (
            stats.fsyncs,
            stats.timeouts,
            stats.largest_group,
            stats.served
        ),
        (3, 0, 2, 5)
    );
}

/// F3, a spurious wake-up steals leadership. Here a waiter that wakes for no reason
/// re-reads the state under the lock, finds a leader, and sleeps again: no extra fsync,
/// and no `Ok` before the fsync that covers it has finished.
#[test]
fn f3_spurious_wake_ups_change_nothing() {
    let m = manager(no_timeouts());
    let gate = Gate::new();
    let leader = gated_fsync(&m, &gate, || Ok(()));
    gate.wait_arrivals(1);

    let ran = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..3).map(|_| counted_fsync(&m, &ran)).collect();
    eventually("three waiters have joined", || waiting(&m) == 3);

    for _ in 0..50 {
        m.wake_everyone_spuriously();
    }
    // Let any wrongly woken thread run far enough to start an fsync or return.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a woken waiter started an fsync"
    );
    assert!(
        waiters.iter().all(|w| !w.finished()),
        "a woken waiter returned"
    );
    assert_eq!((m.stats().fsyncs, waiting(&m)), (1, 3));

    gate.open();
    leader.value().unwrap();
    for waiter in waiters {
        waiter.value().unwrap();
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!((m.stats().fsyncs, m.stats().timeouts), (2, 0));
}

/// F3 for a rider of the LSN front end: woken spuriously while the fsync that covers it
/// runs, it must not return before that fsync has finished; and that fsync makes durable
/// its own target, not what was written while it ran.
#[test]
fn f3_a_spuriously_woken_rider_waits_for_its_fsync() {
    let log = Arc::new(GroupCommit::new(no_timeouts()));
    log.mark_written(10).unwrap();
    let gate = Gate::new();
    let leader = {
        let (log, gate) = (Arc::clone(&log), gate.clone());
        run(move || {
            log.commit(10, || {
                gate.pass();
                Ok(())
            })
        })
    };
    gate.wait_arrivals(1);
    // LSN 5 was written before the fsync started: it rides it.
    let rider = {
        let log = Arc::clone(&log);
        run(move || log.commit(5, || unreachable!("a rider never leads")))
    };
    eventually("the rider has joined", || log.stats().waiting == 1);
    for _ in 0..50 {
        log.wake_everyone_spuriously();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !rider.finished(),
        "the rider returned before its fsync finished"
    );
    assert_eq!(log.durable_lsn(), 0);
    // Written while the fsync runs: that fsync's target (10) does not cover it.
    log.mark_written(12).unwrap();

    gate.open();
    leader.value().unwrap();
    rider.value().unwrap();
    assert_eq!(
        log.durable_lsn(),
        10,
        "an fsync covered what was written after it began"
    );
    assert_eq!((log.stats().fsyncs, log.stats().served), (1, 2));
}

/// F4, no sticky failure. After an fsync fails, the kernel may have dropped the dirty
/// pages, so the next fsync's success proves nothing: the waiter behind the failed
/// fsync, and every later call, get the error, and no later fsync even runs.
#[test]
fn f4_a_failed_fsync_poisons_the_waiters_behind_it_and_every_later_call() {
    let m = manager(no_timeouts());
    let gate = Gate::new();
    let leader = gated_fsync(&m, &gate, || Err(io::Error::from_raw_os_error(5)));
    gate.wait_arrivals(1);

    let ran = Arc::new(AtomicUsize::new(0));
    let waiter = counted_fsync(&m, &ran);
    eventually("the waiter has joined", || waiting(&m) == 1);
    gate.open();

    assert_eq!(leader.value().unwrap_err().raw_os_error(), Some(5));
    assert_eq!(waiter.value().unwrap_err().raw_os_error(), Some(5));
    let later = counted_fsync(&m, &ran).value();
    assert_eq!(later.unwrap_err().raw_os_error(), Some(5));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "an fsync ran after the failure"
    );
    let stats = m.stats();
    assert_eq!((stats.fsyncs, stats.failed_fsyncs, stats.served), (1, 1, 0));
    assert_eq!(stats.failed_requests, 3);
    assert_eq!(m.failure().unwrap().raw_os_error(), Some(5));
}

/// F4 for the LSN front end: a rider of the failed fsync fails, the durable LSN does not
/// move, and a later call for an LSN written before the failure fails too.
#[test]
fn f4_the_durable_lsn_does_not_move_past_a_failed_fsync() {
    let log = Arc::new(GroupCommit::new(no_timeouts()));
    log.mark_written(8).unwrap();
    log.commit(8, || Ok(())).unwrap();
    log.mark_written(20).unwrap();
    let gate = Gate::new();
    let leader = {
        let (log, gate) = (Arc::clone(&log), gate.clone());
        run(move || {
            log.commit(20, || {
                gate.pass();
                Err(io::Error::from_raw_os_error(5))
            })
        })
    };
    gate.wait_arrivals(1);
    let rider = {
        let log = Arc::clone(&log);
        run(move || log.commit(15, || Ok(())))
    };
    eventually("the rider has joined", || log.stats().waiting == 1);
    gate.open();

    assert!(leader.value().is_err());
    assert_eq!(rider.value().unwrap_err().raw_os_error(), Some(5));
    assert_eq!(log.durable_lsn(), 8);
    assert_eq!(
        log.commit(20, || Ok(())).unwrap_err().raw_os_error(),
        Some(5)
    );
    // Already durable before the failure: still no `Ok` once poisoned.
    assert!(log.commit(8, || Ok(())).is_err());
}

/// F5, error kind lost. Waiters get the leader's error with its kind and OS error code,
/// whether or not the error came from the OS.
#[test]
fn f5_waiters_get_the_original_kind_and_errno() {
    for (error, kind, errno) in [
        (
            (|| io::Error::from_raw_os_error(28)) as fn() -> io::Error,
            io::ErrorKind::StorageFull,
            Some(28),
        ),
        (
            (|| io::Error::new(io::ErrorKind::TimedOut, "device timed out")) as fn() -> io::Error,
            io::ErrorKind::TimedOut,
            None,
        ),
    ] {
        let m = manager(no_timeouts());
        let gate = Gate::new();
        let leader = {
            let (m, gate) = (Arc::clone(&m), gate.clone());
            run(move || {
                m.fsync(|| {
                    gate.pass();
                    Err(error())
                })
            })
        };
        gate.wait_arrivals(1);
        let waiter = counted_fsync(&m, &Arc::new(AtomicUsize::new(0)));
        eventually("the waiter has joined", || waiting(&m) == 1);
        gate.open();

        let leader_error = leader.value().unwrap_err();
        let waiter_error = waiter.value().unwrap_err();
        assert_eq!(
            (leader_error.kind(), leader_error.raw_os_error()),
            (kind, errno)
        );
        assert_eq!(
            (waiter_error.kind(), waiter_error.raw_os_error()),
            (kind, errno)
        );
        if errno.is_none() {
            assert!(waiter_error.to_string().contains("device timed out"));
        }
    }
}

/// F6, a panicking closure wedges the manager. Here the panic goes on in the caller
/// whose closure panicked, its waiters and every later call fail, and nothing hangs.
#[test]
fn f6_a_panicking_closure_poisons_instead_of_wedging() {
    let m = manager(no_timeouts());
    let gate = Gate::new();
    let leader = {
        let (m, gate) = (Arc::clone(&m), gate.clone());
        run(move || {
            m.fsync(|| {
                gate.pass();
                panic!("disk on fire")
            })
        })
    };
    gate.wait_arrivals(1);
    let ran = Arc::new(AtomicUsize::new(0));
    let waiter = counted_fsync(&m, &ran);
    eventually("the waiter has joined", || waiting(&m) == 1);
    gate.open();

    let panic = leader.join().expect_err("the panic must reach its caller");
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"disk on fire"));
    let waiter_error = waiter.value().unwrap_err();
    assert_eq!(waiter_error.kind(), io::ErrorKind::Other);
    assert!(waiter_error.to_string().contains("panicked"));
    assert!(counted_fsync(&m, &ran).value().is_err());
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(m.stats().failed_fsyncs, 1);
}

/// F7, overlapping fsyncs. A waiter whose timeout expires while an fsync runs counts
/// the timeout, finds that somebody leads, and waits again: it never starts an fsync of
/// its own, and never returns before it is covered.
#[test]
fn f7_timed_out_waiters_never_fsync_beside_the_leader() {
    let config = Config::builder()
        .waiter_timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let m = manager(config);
    let in_fsync = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let gate = Gate::new();
    let call = |gated: bool| {
        let (m, gate) = (Arc::clone(&m), gate.clone());
        let (in_fsync, most) = (Arc::clone(&in_fsync), Arc::clone(&most_at_once));
        run(move || {
            m.fsync(|| {
                let now = in_fsync.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if gated {
                    gate.pass();
                }
                in_fsync.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        })
    };
    let leader = call(true);
    gate.wait_arrivals(1);
    let waiters: Vec<_> = (0..3).map(|_| call(false)).collect();
    eventually("the other calls are waiting", || waiting(&m) == 3);
    eventually("timeouts expired while the fsync ran", || {
        m.stats().timeouts >= 20
    });
    assert_eq!(m.stats().fsyncs, 1, "a timed-out waiter started an fsync");
    assert_eq!(
        waiting(&m),
        3,
        "a timed-out waiter left before being covered"
    );
    assert!(waiters.iter().all(|w| !w.finished()));
    gate.open();
    leader.value().unwrap();
    for waiter in waiters {
        waiter.value().unwrap();
    }
    assert_eq!(m.stats().fsyncs, 2);
    assert_eq!(
        most_at_once.load(Ordering::SeqCst),
        1,
        "two fsyncs ran at once"
    );
}

/// F7's other half: a waiter whose timeout passed waits again as cheaply as before, a
/// whole period before its next timeout (no busy wait). Each timeout is counted, and a
/// waiter's k-th can only end once k periods have passed since it arrived (a deadline is
/// seen to pass only when the clock has reached it), so while the leader's fsync is
/// held open the count can never exceed, per waiter, the periods elapsed since the test
/// started. The bound follows from the clock, not from the machine being fast: a waiter
/// that spins reaches the count long before the periods pass.
#[test]
fn f7_a_timed_out_waiter_sleeps_a_whole_period_before_its_next_timeout() {
    const WAITERS: u64 = 2;
    let period = Duration::from_millis(10);
    let config = Config::builder().waiter_timeout(period).build().unwrap();
    let m = manager(config);
    let gate = Gate::new();
    let started = Instant::now();
    let leader = gated_fsync(&m, &gate, || Ok(()));
    gate.wait_arrivals(1);
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| gated_fsync(&m, &gate, || Ok(())))
        .collect();
    eventually("timeouts expired while the fsync was held", || {
        m.stats().timeouts >= 10 * WAITERS
    });
    let timeouts = m.stats().timeouts;
    let periods = (started.elapsed().as_nanos() / period.as_nanos()) as u64;
    assert!(
        timeouts <= WAITERS * periods,
        "{timeouts} timeouts from {WAITERS} waiters in {periods} periods: a timed-out waiter busy-waits"
    );
    gate.open();
    leader.value().unwrap();
    for waiter in waiters {
        waiter.value().unwrap();
    }
    assert_eq!(m.stats().fsyncs, 2);
}

/// F8, a lone promoted leader sleeps the whole group interval. Here a leader does not
/// count itself as a companion, so alone it does not wait; and a gathering leader wakes
/// the moment its threshold is met, not at the end of its (one hour) interval.
#[test]
fn f8_gathering_never_delays_a_leader_for_nothing() {
    let hour = Duration::from_secs(3600);
    gather_for_exactly_the_threshold(hour, 2 * hour);
}

/// The same with an interval too long to be a deadline (`Instant` cannot hold it): the
/// leader gathers with no deadline at all, and still for exactly its threshold.
#[test]
fn f8_an_interval_beyond_any_deadline_gathers_for_exactly_the_threshold() {
    let forever = Duration::MAX;
    gather_for_exactly_the_threshold(forever - Duration::from_nanos(1), forever);
}

fn gather_for_exactly_the_threshold(interval: Duration, waiter_timeout: Duration) {
    let config = Config::builder()
        .group_threshold(2)
        .group_interval(interval)
        .waiter_timeout(waiter_timeout)
        .build()
        .unwrap();
    let m = manager(config);
    // Alone: no companions to gather, no wait.
    m.fsync(|| Ok(())).unwrap();

    // Promoted alone: L0 holds an fsync, W1 waits behind it and is promoted with no
    // companions.
    let gate = Gate::new();
    let l0 = gated_fsync(&m, &gate, || Ok(()));
    gate.wait_arrivals(1);
    let w1 = counted_fsync(&m, &Arc::new(AtomicUsize::new(0)));
    eventually("W1 has joined", || waiting(&m) == 1);
    gate.open();
    l0.value().unwrap();
    w1.value().unwrap();

    // Promoted with one companion, threshold two: it gathers until a third caller
    // arrives, then starts at once.
    let gate = Gate::new();
    let l0 = gated_fsync(&m, &gate, || Ok(()));
    gate.wait_arrivals(1);
    let ran = Arc::new(AtomicUsize::new(0));
    let w1 = counted_fsync(&m, &ran);
    let w2 = counted_fsync(&m, &ran);
    eventually("W1 and W2 have joined", || waiting(&m) == 2);
    gate.open();
    l0.value().unwrap();
    eventually("the promoted leader gathers with one companion", || {
        m.stats().served == 4 && waiting(&m) == 1
    });
    let w3 = counted_fsync(&m, &ran);
    for w in [w1, w2, w3] {
        w.value().unwrap();
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let stats = m.stats();
    assert_eq!(
        (stats.fsyncs, stats.largest_group, stats.timeouts),
        (5, 3, 0)
    );
}

/// Adaptive gathering, F8's other half: a leader gathers only when the last fsync had
/// company, waits for as many callers as it had (less itself), and for at most half
/// that fsync's duration. Here L0's fsync (1 s) had W1 queued behind it, so W1, promoted
/// with nobody else waiting, gathers for one companion who never comes: for half a
/// second, measured from L0's fsync to W1's. The bounds are wide: the wait ends at its
/// deadline, so it is at least half; it would be the whole fsync or more if the policy
/// waited longer than half.
#[test]
fn f8_adaptive_gathering_waits_at_most_half_the_last_fsync() {
    let config = Config::builder()
        .adaptive_gathering(Duration::from_secs(10))
        .waiter_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let m = manager(config);
    let l0_fsync = Arc::new(Mutex::new(None::<(Instant, Instant)>));
    let l0 = {
        let (m, shared, l0_fsync) = (Arc::clone(&m), Arc::clone(&m), Arc::clone(&l0_fsync));
        run(move || {
            m.fsync(|| {
                let began = Instant::now();
                eventually("W1 has joined", || waiting(&shared) == 1);
                thread::sleep(Duration::from_secs(1));
                *l0_fsync.lock().unwrap() = Some((began, Instant::now()));
                Ok(())
            })
        })
    };
    eventually("L0 leads", || m.stats().fsyncs == 1);
    let w1_fsync_began = Arc::new(Mutex::new(None::<Instant>));
    let w1 = {
        let (m, w1_fsync_began) = (Arc::clone(&m), Arc::clone(&w1_fsync_began));
        run(move || {
            m.fsync(|| {
                *w1_fsync_began.lock().unwrap() = Some(Instant::now());
                Ok(())
            })
        })
    };
    l0.value().unwrap();
    w1.value().unwrap();
    let (began, ended) = l0_fsync.lock().unwrap().unwrap();
    let w1_began = w1_fsync_began
        .lock()
        .unwrap()
        .expect("W1 led its own fsync");
    let (fsync, gathered) = (ended - began, w1_began - ended);
    assert!(
        gathered >= fsync / 2,
        "W1 gathered for {gathered:?}, less than half of L0's fsync ({fsync:?})"
    );
    assert!(
        gathered < fsync,
        "W1 gathered for {gathered:?}, more than half of L0's fsync ({fsync:?})"
    );
    let stats = m.stats();
    assert_eq!((stats.fsyncs, stats.served, stats.timeouts), (2, 2, 0));
}

/// F9, statistics. Every counter is exact: fsync time is summed in nanoseconds (the
/// reference added 0 ms for every sub-millisecond fsync), a lone fsync is not a group
/// commit, and batch sizes count each waiter once.
#[test]
fn f9_statistics_are_exact() {
    let m = manager(no_timeouts());
    for _ in 0..10 {
        m.fsync(|| {
            std::thread::sleep(Duration::from_micros(400));
            Ok(())
        })
        .unwrap();
    }
    assert!(m.fsync_time_ms() >= 4, "sub-millisecond fsyncs must add up");
    assert_eq!(
        m.group_commit_count(),
        0,
        "lone fsyncs are not group commits"
    );

    let gate = Gate::new();
    let leader = gated_fsync(&m, &gate, || Ok(()));
    gate.wait_arrivals(1);
    let waiters: Vec<_> = (0..3)
        .map(|_| counted_fsync(&m, &Arc::new(AtomicUsize::new(0))))
        .collect();
    eventually("three waiters have joined", || waiting(&m) == 3);
    gate.open();
    leader.value().unwrap();
    for w in waiters {
        w.value().unwrap();
    }
    // 10 lone fsyncs, the gated one, and one that served the three waiters.
    assert_eq!(m.fsync_request_count(), 14);
    assert_eq!(m.fsync_count(), 12);
    assert_eq!(m.group_commit_count(), 1);
    assert_eq!(
        m.fsync_batch_size_sum(),
        2,
        "waiters served besides their leader"
    );
    assert_eq!(m.fsync_timeout_count(), 0);
    let stats = m.stats();
    assert_eq!((stats.served, stats.largest_group), (14, 3));
    assert_eq!(
        stats.requests,
        stats.already_durable + stats.served + stats.failed_requests
    );
    assert!(stats.longest_wait > Duration::ZERO);
}
