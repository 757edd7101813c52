//! Argument parsing shared by the attributes: `key = "value"` pairs with precise errors.

use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, MetaNameValue, Token};

/// One `key = literal` argument.
pub(crate) struct Arg {
    pub(crate) key: String,
    pub(crate) value: Lit,
}

/// Parses `a = "x", b = 2`; every problem is reported at its token.
pub(crate) fn parse(
    args: proc_macro2::TokenStream,
    allowed: &[&str],
) -> Result<Vec<Arg>, syn::Error> {
    let pairs = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args)?;
    let mut out: Vec<Arg> = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match errors.as_mut() {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    for pair in pairs {
        let key = pair
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        if !allowed.contains(&key.as_str()) {
            push(syn::Error::new_spanned(
                &pair.path,
                format!(
                    "unknown argument `{}`; expected one of: {}",
                    quote::ToTokens::to_token_stream(&pair.path)
                        .to_string()
                        .replace(' ', ""),
                    allowed.join(", ")
                ),
            ));
            continue;
        }
        if out.iter().any(|a| a.key == key) {
            push(syn::Error::new_spanned(
                &pair.path,
                format!("`{key}` is given twice"),
            ));
            continue;
        }
        match pair.value {
            Expr::Lit(ExprLit { lit, .. }) => out.push(Arg { key, value: lit }),
            other => push(syn::Error::new_spanned(
                other,
                format!("`{key}` takes a literal"),
            )),
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The package this crate's attributes belong to, as users' `Cargo.toml`s name it.
const PACKAGE: &str = "async-multiprocessing";

/// The package's library name: what `use multiprocessing::…` writes.
const LIBRARY: &str = "multiprocessing";

/// The path generated code uses to name the main crate when the attribute gives no
/// `crate = "…"`. Every attribute asks here, so how the default is found is decided in one place.
///
/// The name comes from the `Cargo.toml` of the crate being compiled, as `proc-macro-crate`
/// reads it: `mp = { package = "async-multiprocessing" }` gives `::mp`. A dependency under
/// the package's own name is reached by its library name, `::multiprocessing`, and so is the
/// library itself (it declares `extern crate self as multiprocessing`), with its examples,
/// tests and doc tests. When the package is not a direct dependency (it comes through a
/// facade crate) there is nothing to read, and the attribute needs `crate = "facade::path"`.
pub(crate) fn default_crate() -> syn::Path {
    let name = match proc_macro_crate::crate_name(PACKAGE) {
        Ok(proc_macro_crate::FoundCrate::Name(name)) => name,
        Ok(proc_macro_crate::FoundCrate::Itself) | Err(_) => LIBRARY.to_owned(),
    };
    // Without `package = …` a dependency keyed by the package's own name is named by its
    // library in code, and proc-macro-crate reports it under the key, `async_multiprocessing`.
    let name = if name == PACKAGE.replace('-', "_") {
        LIBRARY
    } else {
        &name
    };
    // A key that is no identifier (a keyword) cannot be written in code either; the error
    // then names `multiprocessing`, and `crate = "…"` is the way out.
    syn::parse_str(&format!("::{name}")).unwrap_or_else(|_| syn::parse_quote!(::multiprocessing))
}
