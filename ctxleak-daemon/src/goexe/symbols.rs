//! The ELF symbol table of a Go binary: names to addresses and back.
//!
//! Go's linker keeps `.symtab` unless the binary was built with `-s`; stripped binaries need
//! `.gopclntab` instead (not supported yet).

use std::collections::HashMap;

use object::{Object as _, ObjectSymbol as _, SymbolKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub address: u64,
    pub size: u64,
}

#[derive(Debug, Default)]
pub struct Symbols {
    /// Text symbols sorted by address, for PC lookups.
    functions: Vec<Symbol>,
    by_name: HashMap<String, Symbol>,
}

impl Symbols {
    pub fn from_object(file: &object::File<'_>) -> Self {
        let mut functions = Vec::new();
        let mut by_name = HashMap::new();
        for symbol in file.symbols() {
            let Ok(name) = symbol.name() else { continue };
            if name.is_empty() || symbol.is_undefined() {
                continue;
            }
            let entry = Symbol { name: name.to_owned(), address: symbol.address(), size: symbol.size() };
            if symbol.kind() == SymbolKind::Text {
                functions.push(entry.clone());
            }
            by_name.entry(entry.name.clone()).or_insert(entry);
        }
        functions.sort_by_key(|symbol| symbol.address);
        Self { functions, by_name }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Symbol> {
        self.by_name.get(name)
    }

    /// The function whose code contains `pc` (link-time address).
    pub fn function_at(&self, pc: u64) -> Option<&Symbol> {
        let index = self.functions.partition_point(|symbol| symbol.address <= pc);
        let symbol = self.functions.get(index.checked_sub(1)?)?;
        (pc < symbol.address + symbol.size.max(1)).then_some(symbol)
    }

    /// Functions whose names start with `prefix`, in address order.
    pub fn functions_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Symbol> {
        self.functions.iter().filter(move |symbol| symbol.name.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, u64, u64)]) -> Symbols {
        let mut symbols = Symbols::default();
        for &(name, address, size) in entries {
            let symbol = Symbol { name: name.into(), address, size };
            symbols.functions.push(symbol.clone());
            symbols.by_name.insert(name.into(), symbol);
        }
        symbols.functions.sort_by_key(|s| s.address);
        symbols
    }

    #[test]
    fn looks_up_pcs() {
        let symbols = table(&[("main.main", 0x1000, 0x40), ("runtime.main", 0x1040, 0x20)]);
        assert_eq!(symbols.function_at(0x1000).unwrap().name, "main.main");
        assert_eq!(symbols.function_at(0x103f).unwrap().name, "main.main");
        assert_eq!(symbols.function_at(0x1040).unwrap().name, "runtime.main");
        assert!(symbols.function_at(0x1060).is_none());
        assert!(symbols.function_at(0xfff).is_none());
    }
}
