//! TLS stacks the agent recognises but cannot trace yet. They are providers like the others, with
//! no programs: each says what it found ([`Examined::Unsupported`]), so `--pid` names the stack in
//! its error and `--follow`/`--all` log it once per program and count it.

use super::providers::{Examined, Provider, symbol_offsets};

/// Java: TLS (JSSE) is Java code run by the JVM, with no native function to probe.
pub const JAVA: Provider = Provider {
    name: "Java (JSSE)",
    programs: &[],
    examine: examine_java,
    host_libraries: &[],
};

fn examine_java(obj: &object::File<'_>) -> Examined {
    // The HotSpot JVM (`libjvm.so`) exports its invocation interface.
    if symbol_offsets(obj, &["JNI_CreateJavaVM"]).is_empty() {
        Examined::NotThis
    } else {
        Examined::Unsupported(
            "Java (JSSE) is not supported yet: TLS runs as Java code inside the JVM (libjvm), with no native TLS library to attach to".to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_itself_is_not_java() {
        let me = std::fs::read("/proc/self/exe").expect("own exe");
        let obj = object::File::parse(&*me).expect("ELF");
        assert_eq!(examine_java(&obj), Examined::NotThis);
    }
}
