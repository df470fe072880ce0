//! Blame the deepest failing dependency, not every check that noticed.
//!
//! When a database dies, every check of the services on top of it fails
//! too; a healer that treats them alike restarts the web tier, the queue
//! and the cache while the database stays down (an alert storm in
//! Nagios/Zabbix without dependency suppression). Walking the declared
//! dependencies finds the failing checks nothing else explains.

use std::collections::{BTreeMap, BTreeSet};

/// Failing checks among the transitive dependencies of `check` that have no
/// failing dependency of their own, sorted. Empty means `check` itself is
/// the root. Failing checks that depend on each other in a cycle are all
/// returned, as none of them is deeper than the others.
pub fn root_causes(
    check: &str,
    depends_on: &BTreeMap<String, Vec<String>>,
    failing: &BTreeSet<String>,
) -> Vec<String> {
    let below_check = reachable(check, depends_on);
    let below_failing: BTreeMap<&str, BTreeSet<&str>> = below_check
        .iter()
        .filter(|&&dep| dep != check && failing.contains(dep))
        .map(|&dep| (dep, reachable(dep, depends_on)))
        .collect();
    // A failing node is explained by a failing node beneath it, unless that
    // one leads back to it (a cycle, so neither is deeper). `check` itself
    // always leads back, as every candidate lies below it.
    let leads_back_to = |from: &str, to: &str| {
        from == check
            || below_failing
                .get(from)
                .is_some_and(|below| below.contains(to))
    };
    below_failing
        .iter()
        .filter(|&(&candidate, below)| {
            !below.iter().any(|&dep| {
                dep != candidate && failing.contains(dep) && !leads_back_to(dep, candidate)
            })
        })
        .map(|(&candidate, _)| candidate.to_string())
        .collect()
}

/// One dependency cycle as a path that returns to its start, such as
/// `["a", "b", "a"]`, or `None` if the graph is acyclic.
pub fn find_cycle(depends_on: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    let mut finished: BTreeSet<&str> = BTreeSet::new();
    for start in depends_on.keys() {
        if finished.contains(start.as_str()) {
            continue;
        }
        // Depth-first, iterative: (node, index of its next dependency).
        let mut path: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        let mut index_on_path: BTreeMap<&str, usize> = BTreeMap::from([(start.as_str(), 0)]);
        while let Some(&(node, next)) = path.last() {
            let Some(dep) = deps_of(node, depends_on).get(next) else {
                finished.insert(node);
                index_on_path.remove(node);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            let dep = dep.as_str();
            if let Some(&at) = index_on_path.get(dep) {
                let mut cycle: Vec<String> = path[at..].iter().map(|&(n, _)| n.into()).collect();
                cycle.push(dep.into());
                return Some(cycle);
            }
            if !finished.contains(dep) {
                index_on_path.insert(dep, path.len());
                path.push((dep, 0));
            }
        }
    }
    None
}

/// Every node reachable from `start` by one or more edges (so `start`
/// itself only if it lies on a cycle).
fn reachable<'a>(start: &str, depends_on: &'a BTreeMap<String, Vec<String>>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = deps_of(start, depends_on)
        .iter()
        .map(String::as_str)
        .collect();
    while let Some(node) = todo.pop() {
        if seen.insert(node) {
            todo.extend(deps_of(node, depends_on).iter().map(String::as_str));
        }
    }
    seen
}

fn deps_of<'a>(node: &str, depends_on: &'a BTreeMap<String, Vec<String>>) -> &'a [String] {
    depends_on.get(node).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(k, deps)| (k.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn no_failing_dependency_means_the_check_is_the_root() {
        let g = graph(&[("web", &["db"]), ("db", &[])]);
        assert!(root_causes("web", &g, &set(&["web"])).is_empty());
        assert!(root_causes("web", &BTreeMap::new(), &set(&["web"])).is_empty());
    }

    #[test]
    fn failing_direct_dependency_is_blamed() {
        let g = graph(&[("web", &["db"])]);
        assert_eq!(root_causes("web", &g, &set(&["web", "db"])), ["db"]);
    }

    #[test]
    fn only_the_deepest_failing_dependency_is_returned() {
        let g = graph(&[("web", &["api"]), ("api", &["db"]), ("db", &["disk"])]);
        let failing = set(&["web", "api", "db"]);
        assert_eq!(root_causes("web", &g, &failing), ["db"]);
        let failing = set(&["web", "api", "db", "disk"]);
        assert_eq!(root_causes("web", &g, &failing), ["disk"]);
    }

    #[test]
    fn a_healthy_link_in_between_still_reaches_deeper_failures() {
        let g = graph(&[("web", &["api"]), ("api", &["db"])]);
        assert_eq!(root_causes("web", &g, &set(&["web", "db"])), ["db"]);
        // api fails, but so does something beneath it: only db is blamed.
        assert_eq!(root_causes("web", &g, &set(&["api", "db"])), ["db"]);
    }

    #[test]
    fn independent_roots_are_all_returned_sorted_once() {
        let g = graph(&[
            ("web", &["cache", "db", "api"]),
            ("api", &["db", "dns"]),
            ("cache", &["dns"]),
        ]);
        let failing = set(&["web", "api", "cache", "db", "dns"]);
        assert_eq!(root_causes("web", &g, &failing), ["db", "dns"]);
    }

    #[test]
    fn failures_outside_the_dependency_tree_are_ignored() {
        let g = graph(&[("web", &["db"]), ("mail", &["smtp"])]);
        assert!(root_causes("web", &g, &set(&["web", "smtp", "mail"])).is_empty());
        assert!(root_causes("db", &g, &set(&["web"])).is_empty());
    }

    #[test]
    fn unknown_dependency_names_are_leaves() {
        let g = graph(&[("web", &["ghost"])]);
        assert_eq!(root_causes("web", &g, &set(&["ghost"])), ["ghost"]);
        assert!(root_causes("nobody", &g, &set(&["ghost"])).is_empty());
    }

    #[test]
    fn cycles_terminate_and_blame_the_whole_failing_cycle() {
        let g = graph(&[("web", &["a"]), ("a", &["b"]), ("b", &["a"])]);
        assert_eq!(root_causes("web", &g, &set(&["a", "b"])), ["a", "b"]);
        assert_eq!(root_causes("web", &g, &set(&["b"])), ["b"]);
        // A failure beneath the cycle is deeper still.
        let g = graph(&[("web", &["a"]), ("a", &["b"]), ("b", &["a", "c"])]);
        assert_eq!(root_causes("web", &g, &set(&["a", "b", "c"])), ["c"]);
    }

    #[test]
    fn a_cycle_through_the_check_never_blames_the_check() {
        let g = graph(&[("web", &["a"]), ("a", &["web"])]);
        assert_eq!(root_causes("web", &g, &set(&["web", "a"])), ["a"]);
        let g = graph(&[("web", &["web"])]);
        assert!(root_causes("web", &g, &set(&["web"])).is_empty());
    }

    #[test]
    fn find_cycle_none_for_a_dag() {
        let g = graph(&[
            ("a", &["b", "c"]),
            ("b", &["c"]),
            ("c", &[]),
            ("d", &["zz"]),
        ]);
        assert_eq!(find_cycle(&g), None);
        assert_eq!(find_cycle(&BTreeMap::new()), None);
    }

    #[test]
    fn find_cycle_returns_a_closed_path() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    }

    #[test]
    fn find_cycle_finds_self_loops_and_cycles_off_the_start() {
        assert_eq!(find_cycle(&graph(&[("a", &["a"])])).unwrap(), ["a", "a"]);
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])]);
        assert_eq!(find_cycle(&g).unwrap(), ["b", "c", "b"]);
        // The cycle is reached only from a later key, after a finished branch.
        let g = graph(&[("a", &["b"]), ("b", &[]), ("m", &["b", "n"]), ("n", &["m"])]);
        assert_eq!(find_cycle(&g).unwrap(), ["m", "n", "m"]);
    }

    #[test]
    fn find_cycle_every_reported_path_is_a_real_cycle() {
        let g = graph(&[
            ("a", &["b", "x"]),
            ("b", &["c"]),
            ("c", &["d"]),
            ("d", &["b"]),
            ("x", &[]),
        ]);
        let cycle = find_cycle(&g).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        for pair in cycle.windows(2) {
            assert!(g[&pair[0]].contains(&pair[1]), "{cycle:?}");
        }
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        let n = 100_000;
        let mut g: BTreeMap<String, Vec<String>> = (0..n)
            .map(|i| (format!("n{i}"), vec![format!("n{}", i + 1)]))
            .collect();
        assert_eq!(find_cycle(&g), None);
        let failing = set(&["n99999", "n100000"]);
        assert_eq!(root_causes("n0", &g, &failing), ["n100000"]);
        g.insert(format!("n{n}"), vec!["n0".into()]);
        assert_eq!(find_cycle(&g).map(|c| c.len()), Some(n + 2));
    }
}
