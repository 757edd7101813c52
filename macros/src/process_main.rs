//! `#[process_main]` and `#[multiprocessing::test]`: parse → validate → expand.

use crate::attr;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{ItemFn, Lit};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Main,
    Test,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Main => "#[process_main]",
            Kind::Test => "#[multiprocessing::test]",
        }
    }
}

struct Config {
    multi_thread: bool,
    worker_threads: Option<usize>,
    krate: syn::Path,
}

fn parse_config(args: TokenStream, kind: Kind) -> syn::Result<Config> {
    let mut cfg = Config {
        multi_thread: kind == Kind::Main,
        worker_threads: None,
        krate: attr::default_crate(),
    };
    let mut flavor_given = false;
    let mut worker_span = None;
    for arg in attr::parse(args, &["flavor", "worker_threads", "crate"])? {
        match (arg.key.as_str(), &arg.value) {
            ("flavor", Lit::Str(s)) => {
                flavor_given = true;
                cfg.multi_thread = match s.value().as_str() {
                    "multi_thread" => true,
                    "current_thread" => false,
                    other => {
                        return Err(syn::Error::new_spanned(
                            s,
                            format!("unknown flavor `{other}`; expected one of: \"multi_thread\", \"current_thread\""),
                        ))
                    }
                };
            }
            ("worker_threads", Lit::Int(i)) => {
                worker_span = Some(i.span());
                let n: usize = i.base10_parse()?;
                if n == 0 {
                    return Err(syn::Error::new_spanned(i, "`worker_threads` may not be 0."));
                }
                cfg.worker_threads = Some(n);
            }
            ("crate", Lit::Str(s)) => cfg.krate = s.parse()?,
            (key, value) => {
                let want = if key == "worker_threads" {
                    "an integer"
                } else {
                    "a string"
                };
                return Err(syn::Error::new_spanned(
                    value,
                    format!("`{key}` takes {want}"),
                ));
            }
        }
    }
    if cfg.worker_threads.is_some() && !cfg.multi_thread {
        return Err(syn::Error::new(
            worker_span.unwrap_or_else(proc_macro2::Span::call_site),
            if flavor_given {
                "`worker_threads` needs `flavor = \"multi_thread\"`"
            } else {
                "`worker_threads` needs `flavor = \"multi_thread\"` (the default flavor here is current_thread)"
            },
        ));
    }
    Ok(cfg)
}

fn validate(f: &ItemFn, kind: Kind) -> Option<syn::Error> {
    let sig = &f.sig;
    let mut errors: Vec<syn::Error> = Vec::new();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!(
                "{} needs an `async fn`; add `async` before `fn`",
                kind.attr()
            ),
        ));
    }
    if !sig.inputs.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.inputs,
            format!("{} takes a function without parameters", kind.attr()),
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!("{} cannot be generic", kind.attr()),
        ));
    }
    for a in &f.attrs {
        let path = a.path();
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let is_test = segments.last().is_some_and(|s| s == "test");
        if kind == Kind::Test && is_test {
            errors.push(syn::Error::new_spanned(
                a,
                format!(
                    "#[multiprocessing::test] already makes this a test; remove #[{}]",
                    segments.join("::")
                ),
            ));
        }
        if kind == Kind::Main && segments.last().is_some_and(|s| s == "main") {
            errors.push(syn::Error::new_spanned(
                a,
                format!(
                    "#[process_main] already builds the runtime; remove #[{}]",
                    segments.join("::")
                ),
            ));
        }
    }
    errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    })
}

pub(crate) fn expand(args: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    let f: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = e.into_compile_error();
            return quote!(#item #e);
        }
    };
    let cfg = match parse_config(args, kind) {
        Ok(c) => c,
        Err(e) => return fallback(f, e, kind),
    };
    if let Some(e) = validate(&f, kind) {
        return fallback(f, e, kind);
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = f;
    let name = &sig.ident;
    let output = &sig.output;
    let krate = &cfg.krate;
    let multi_thread = cfg.multi_thread;
    let worker_threads = match cfg.worker_threads {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let rt = quote!(#krate::__private::RuntimeConfig { multi_thread: #multi_thread, worker_threads: #worker_threads });
    match kind {
        Kind::Main => quote! {
            #(#attrs)*
            #vis fn #name() #output {
                async fn __mp_body() #output #block
                #[allow(unused_imports)]
                use #krate::__private::{LaunchLocal as _, LaunchSend as _};
                (&#krate::__private::Body::new(__mp_body())).main(#rt)
            }
        },
        Kind::Test => quote! {
            #[::core::prelude::v1::test]
            #(#attrs)*
            #vis fn #name() #output {
                async fn __mp_body() #output #block
                #[allow(unused_imports)]
                use #krate::__private::{LaunchLocal as _, LaunchSend as _};
                (&#krate::__private::Body::new(__mp_body())).test(::core::module_path!(), ::core::stringify!(#name), #rt)
            }
        },
    }
}

/// On error: the user's function, made synchronous (so rustc adds no "main cannot be async" or
/// "async test" error of its own) and stripped of test attributes, plus our error.
fn fallback(mut f: ItemFn, e: syn::Error, kind: Kind) -> TokenStream {
    f.sig.asyncness = None;
    if kind == Kind::Test {
        f.attrs
            .retain(|a| a.path().segments.last().is_none_or(|s| s.ident != "test"));
    }
    f.block = syn::parse_quote!({ ::core::unimplemented!() });
    let e = e.into_compile_error();
    quote!(#f #e)
}
