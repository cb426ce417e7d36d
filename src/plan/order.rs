//! The start order of a pipeline: `inputs` (and `depends_on`) point upstream, so a component
//! starts after every component it reads from or depends on. Ties keep file order, so the order
//! is stable and predictable; a cycle is reported along its members.

use std::collections::{BTreeSet, HashMap};

use super::ComponentPlan;

/// Orders `components` topologically and sets each one's depth (0 without inputs, else one
/// more than its deepest input). On a cycle, returns the ids along it (first id repeated).
pub(super) fn order(components: Vec<ComponentPlan>) -> Result<Vec<ComponentPlan>, Vec<String>> {
    let order = start_order(&components)?;
    let mut slots: Vec<Option<ComponentPlan>> = components.into_iter().map(Some).collect();
    let mut ordered: Vec<ComponentPlan> = order.iter().filter_map(|&i| slots[i].take()).collect();
    let mut depth: HashMap<String, usize> = HashMap::new();
    for component in &mut ordered {
        component.depth = component
            .inputs
            .iter()
            .chain(&component.depends_on)
            .filter_map(|input| depth.get(input))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(component.id.clone(), component.depth);
    }
    Ok(ordered)
}

/// Kahn's algorithm, always taking the earliest ready component in file order. On a cycle,
/// returns the ids along one cycle (first id repeated at the end).
fn start_order(components: &[ComponentPlan]) -> Result<Vec<usize>, Vec<String>> {
    let index: HashMap<&str, usize> = components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = components
        .iter()
        .map(|c| {
            c.inputs
                .iter()
                .chain(&c.depends_on)
                .filter_map(|i| index.get(i.as_str()).copied())
                .collect()
        })
        .collect();
    let mut placed = vec![false; components.len()];
    let mut order = Vec::new();
    while order.len() < components.len() {
        let next =
            (0..components.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => return Err(find_cycle(components, &deps, &placed)),
        }
    }
    Ok(order)
}

fn find_cycle(components: &[ComponentPlan], deps: &[Vec<usize>], placed: &[bool]) -> Vec<String> {
    // Every unplaced component waits on another unplaced one; walking those edges must revisit
    // a component, and the walk from its first visit is a cycle.
    let Some(mut current) = (0..components.len()).find(|&i| !placed[i]) else {
        return Vec::new();
    };
    let mut path: Vec<usize> = Vec::new();
    let mut on_path = BTreeSet::new();
    while on_path.insert(current) {
        path.push(current);
        match deps[current].iter().find(|&&d| !placed[d]) {
            Some(&next) => current = next,
            None => break,
        }
    }
    let start = path.iter().position(|&i| i == current).unwrap_or(0);
    // Inputs point upstream; print the cycle in data-flow order, from its first component in
    // file order.
    let mut members: Vec<usize> = path[start..].iter().rev().copied().collect();
    if let Some(first) = (0..members.len()).min_by_key(|&i| members[i]) {
        members.rotate_left(first);
    }
    let mut cycle: Vec<String> = members.iter().map(|&i| components[i].id.clone()).collect();
    if let Some(first) = cycle.first().cloned() {
        cycle.push(first);
    }
    cycle
}
