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

/// The path generated code uses to name the main crate when the attribute gives no
/// `crate = "…"`. Every attribute asks here, so how the default is found is decided in one place.
pub(crate) fn default_crate() -> syn::Path {
    syn::parse_quote!(::multiprocessing)
}
