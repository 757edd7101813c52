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
        krate: syn::parse_quote!(::multiprocessing),
    };
    let mut flavor_given = false;
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
            proc_macro2::Span::call_site(),
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
    if kind == Kind::Test && f.attrs.iter().any(|a| a.path().is_ident("test")) {
        errors.push(syn::Error::new_spanned(
            &f.attrs[0],
            "#[multiprocessing::test] already adds #[test]; remove the second attribute",
        ));
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
        Err(e) => {
            let e = e.into_compile_error();
            return quote!(#f #e);
        }
    };
    if let Some(e) = validate(&f, kind) {
        let e = e.into_compile_error();
        return quote!(#f #e);
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
                #krate::__private::main(#rt, __mp_body())
            }
        },
        Kind::Test => quote! {
            #[::core::prelude::v1::test]
            #(#attrs)*
            #vis fn #name() #output {
                async fn __mp_body() #output #block
                #krate::__private::test(::core::module_path!(), ::core::stringify!(#name), #rt, __mp_body())
            }
        },
    }
}
