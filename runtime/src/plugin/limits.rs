//! What one plugin instance may hold, whatever it is made of. A component is several core
//! instances in one `Store`, each of which may declare memories and tables: the limits count
//! the whole store, so that `memory-limit` bounds the plugin and not each of its memories.

use wasmtime::ResourceLimiter;

/// Core instances a component may be made of. A Rust plugin has a handful, an interpreter built
/// into a component (CPython, QuickJS) a few dozen.
pub(super) const INSTANCES_AT_MOST: usize = 100;
/// Linear memories, over all of a component's core instances.
pub(super) const MEMORIES_AT_MOST: usize = 16;
/// Tables, over all of a component's core instances.
pub(super) const TABLES_AT_MOST: usize = 100;
/// Table elements, over all tables; they hold function references, a few thousand is plenty
/// for any real plugin.
pub(super) const TABLE_ELEMENTS_AT_MOST: usize = 100_000;

/// A total that grants must stay within, with the last grant kept so that a growth that fails
/// after being granted can be taken back.
#[derive(Debug)]
struct Budget {
    limit: usize,
    used: usize,
    last_grant: usize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            last_grant: 0,
        }
    }

    /// Grants growing one item from `current` to `desired`, if the total stays within.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let grant = desired.saturating_sub(current);
        let total = self.used.saturating_add(grant);
        if total > self.limit {
            return false;
        }
        self.used = total;
        self.last_grant = grant;
        true
    }

    /// Takes back the last grant: its growth failed.
    fn failed(&mut self) {
        self.used = self.used.saturating_sub(self.last_grant);
        self.last_grant = 0;
    }
}

/// Caps the linear memory of one instance, all memories together, and remembers whether the cap
/// was hit, so that the trap that usually follows (an allocation failure in the guest) is
/// reported as what it is.
#[derive(Debug)]
pub(super) struct Limits {
    /// Bytes of every memory of the store.
    memory: Budget,
    /// Elements of every table of the store.
    table_elements: Budget,
    /// Whether the memory limit refused a growth since the flag was last cleared.
    pub(super) hit: bool,
}

impl Limits {
    pub(super) fn new(memory_limit: usize) -> Self {
        Self {
            memory: Budget::new(memory_limit),
            table_elements: Budget::new(TABLE_ELEMENTS_AT_MOST),
            hit: false,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.memory.grow(current, desired);
        self.hit |= !granted;
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory.failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.table_elements.grow(current, desired))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_elements.failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        INSTANCES_AT_MOST
    }

    fn memories(&self) -> usize {
        MEMORIES_AT_MOST
    }

    fn tables(&self) -> usize {
        TABLES_AT_MOST
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::{Engine, Instance, Module, Store};

    use super::*;

    const MIB: usize = 1 << 20;

    fn store(engine: &Engine, memory_limit: usize) -> Store<Limits> {
        let mut store = Store::new(engine, Limits::new(memory_limit));
        store.limiter(|l| l);
        store
    }

    /// A module from its text.
    fn module(engine: &Engine, text: &str) -> Module {
        let binary = wat::parse_str(text).expect("valid module text");
        Module::new(engine, binary).expect("valid module")
    }

    /// A module with one memory of `pages` 64 KiB pages at its start.
    fn with_memory(engine: &Engine, pages: u32) -> Module {
        module(engine, &format!("(module (memory {pages}))"))
    }

    #[test]
    fn memories_of_several_core_instances_count_together() {
        let engine = Engine::default();
        let mut store = store(&engine, 64 * MIB);
        // 40 MiB each: either alone fits in 64 MiB, both do not.
        let module = with_memory(&engine, 640);
        Instance::new(&mut store, &module, &[]).expect("the first fits");
        assert!(!store.data().hit);
        let refused = Instance::new(&mut store, &module, &[]).expect_err("over the total");
        assert!(store.data().hit, "{refused:#}");
    }

    #[test]
    fn two_memories_of_one_module_count_together_and_growth_is_counted() {
        let engine = Engine::default();
        let mut store = store(&engine, 64 * MIB);
        let two = module(&engine, "(module (memory 513) (memory 513))");
        Instance::new(&mut store, &two, &[]).expect_err("two memories of 32 MiB and a page");
        let mut store = self::store(&engine, 64 * MIB);
        let grows = module(
            &engine,
            r#"(module (memory 1) (func (export "grow") (param i32) (result i32)
                local.get 0 memory.grow))"#,
        );
        let instance = Instance::new(&mut store, &grows, &[]).expect("64 KiB");
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .expect("exported");
        assert_eq!(
            grow.call(&mut store, 1000).expect("runs"),
            1,
            "up to 1001 pages"
        );
        assert_eq!(
            grow.call(&mut store, 100).expect("runs"),
            -1,
            "past 64 MiB: refused"
        );
        assert!(store.data().hit);
        assert_eq!(
            grow.call(&mut store, 20).expect("runs"),
            1001,
            "what is left is given"
        );
    }

    #[test]
    fn a_grant_whose_growth_failed_is_taken_back() {
        let mut budget = Budget::new(100);
        assert!(budget.grow(0, 60));
        assert!(!budget.grow(0, 50), "110 of 100");
        assert!(budget.grow(60, 90));
        budget.failed();
        assert!(budget.grow(0, 40), "the failed 30 are free again: 60 + 40");
        assert!(!budget.grow(0, 1));
    }

    #[test]
    fn a_component_of_too_many_core_instances_is_refused() {
        let engine = Engine::default();
        let mut store = store(&engine, 64 * MIB);
        let tiny = module(&engine, "(module)");
        for _ in 0..INSTANCES_AT_MOST {
            Instance::new(&mut store, &tiny, &[]).expect("within the count");
        }
        Instance::new(&mut store, &tiny, &[]).expect_err("one too many");
    }

    #[test]
    fn table_elements_count_over_all_tables() {
        let engine = Engine::default();
        let mut store = store(&engine, 64 * MIB);
        let text = format!(
            "(module (table {} funcref))",
            TABLE_ELEMENTS_AT_MOST / 2 + 1
        );
        let half = module(&engine, &text);
        Instance::new(&mut store, &half, &[]).expect("the first table fits");
        Instance::new(&mut store, &half, &[]).expect_err("two are over the total");
    }
}
