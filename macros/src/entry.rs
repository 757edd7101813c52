//! `#[entry]`: parse → validate → expand.

use crate::attr;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, Item, ItemFn, ItemImpl, Path, ReturnType, Type};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let krate = match crate_path(args, "entry") {
        Ok(k) => k,
        Err(e) => return with_error(item, e),
    };
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(f)) => expand_fn(&krate, f),
        Ok(Item::Impl(i)) => expand_run(&krate, i),
        Ok(other) => with_error(
            item,
            syn::Error::new_spanned(
                first_token(&other),
                "#[entry] applies to a `fn` (or an `impl multiprocessing::Run for T` block); a child process runs functions by name",
            ),
        ),
        Err(e) => with_error(item, e),
    }
}

fn first_token(item: &Item) -> TokenStream {
    item.to_token_stream().into_iter().take(2).collect()
}

pub(crate) fn with_error(item: TokenStream, e: syn::Error) -> TokenStream {
    let e = e.into_compile_error();
    quote!(#item #e)
}

/// The `crate = "path"` argument of attribute `name`, or the default path.
pub(crate) fn crate_path(args: TokenStream, name: &str) -> syn::Result<Path> {
    let args = attr::parse(args, &["crate"])?;
    match args.into_iter().next() {
        Some(arg) => match arg.value {
            syn::Lit::Str(s) => s.parse(),
            other => Err(syn::Error::new_spanned(
                other,
                format!("`crate` takes a string: #[{name}(crate = \"path::to::multiprocessing\")]"),
            )),
        },
        None => Ok(attr::default_crate()),
    }
}

/// Every reason the function cannot be an entry, each at its token.
fn validate(f: &ItemFn) -> Option<syn::Error> {
    let mut errors: Vec<syn::Error> = Vec::new();
    let sig = &f.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "an #[entry] function cannot be generic: a child finds it by name, and a name carries no type parameters; \
             write a non-generic #[entry] wrapper for each type you need",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "an #[entry] function cannot have an explicit ABI",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            v,
            "an #[entry] function cannot be variadic",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                r,
                "an #[entry] function cannot take `self`: it must be a free function; for a value that runs in a child, \
                 implement `multiprocessing::Run` and put #[entry] on that impl",
            )),
            FnArg::Typed(t) => {
                if let Some(e) = borrowed(&t.ty, "parameter") {
                    errors.push(e);
                }
            }
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Some(e) = borrowed(ty, "return type") {
            errors.push(e);
        }
    }
    errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    })
}

/// A reference or `impl Trait` anywhere in the type cannot cross a process boundary.
fn borrowed(ty: &Type, what: &str) -> Option<syn::Error> {
    let mut found = None;
    find_borrow(ty, &mut found);
    found.map(|(span, kind)| {
        let (article, hint) = match kind {
            "reference" => ("a", "take an owned type instead (`String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`)"),
            "raw pointer" => ("a", "send the data it points to, as an owned value"),
            _ => ("an", "name a concrete type"),
        };
        syn::Error::new(
            span,
            format!("an #[entry] {what} travels between processes by value, so it cannot be {article} {kind}; {hint}"),
        )
    })
}

pub(crate) fn find_borrow(ty: &Type, found: &mut Option<(Span, &'static str)>) {
    if found.is_some() {
        return;
    }
    match ty {
        Type::Reference(r) => *found = Some((r.span(), "reference")),
        Type::ImplTrait(t) => *found = Some((t.span(), "`impl Trait` type")),
        Type::Ptr(p) => *found = Some((p.span(), "raw pointer")),
        Type::Tuple(t) => t.elems.iter().for_each(|e| find_borrow(e, found)),
        Type::Array(a) => find_borrow(&a.elem, found),
        Type::Slice(s) => find_borrow(&s.elem, found),
        Type::Paren(p) => find_borrow(&p.elem, found),
        Type::Group(g) => find_borrow(&g.elem, found),
        Type::Path(p) => {
            for seg in &p.path.segments {
                if let syn::PathArguments::AngleBracketed(a) = &seg.arguments {
                    for arg in &a.args {
                        match arg {
                            syn::GenericArgument::Type(t) => find_borrow(t, found),
                            syn::GenericArgument::Lifetime(l) if l.ident != "static" => {
                                *found = Some((l.span(), "reference"));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn expand_fn(krate: &Path, f: ItemFn) -> TokenStream {
    if let Some(e) = validate(&f) {
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
    let hidden = format_ident!("__mp_entry_{}", name);
    // `#[cfg(..)]` must hold for everything generated, or a compiled-out fn leaves a dangling
    // struct and registration behind.
    let cfgs: Vec<syn::Attribute> = attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .cloned()
        .collect();
    let (doc_attrs, other_attrs): (Vec<_>, Vec<_>) =
        attrs.into_iter().partition(|a| a.path().is_ident("doc"));
    let types: Vec<&Type> = sig
        .inputs
        .iter()
        .filter_map(|i| match i {
            FnArg::Typed(t) => Some(&*t.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let vars: Vec<_> = (0..types.len())
        .map(|i| format_ident!("__mp_arg{}", i))
        .collect();
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let (args_ty, args_pat) = match types.len() {
        0 => (quote!(()), quote!(())),
        1 => {
            let (t, v) = (&types[0], &vars[0]);
            (quote!(#t), quote!(#v))
        }
        _ => (quote!((#(#types,)*)), quote!((#(#vars,)*))),
    };
    let is_async = sig.asyncness.is_some();
    let mut hidden_sig = sig.clone();
    hidden_sig.ident = hidden.clone();
    let call = quote!(|#args_pat: #args_ty| #hidden(#(#vars),*));
    let boxed = quote!(|#args_pat: #args_ty| ::std::boxed::Box::pin(#hidden(#(#vars),*)) as #krate::BoxFuture<#output>);
    let (target, pointer, invoke, invoke_batch) = if is_async {
        (
            quote!(fn(#(#types),*) -> #krate::BoxFuture<#output>),
            quote!(|#(#vars),*| ::std::boxed::Box::pin(#hidden(#(#vars),*))),
            quote!(#krate::__private::invoke_async(args, #boxed)),
            quote!(#krate::__private::invoke_batch_async(args, #boxed)),
        )
    } else {
        (
            quote!(fn(#(#types),*) -> #output),
            quote!(#hidden),
            quote!(#krate::__private::invoke_sync(args, #call)),
            quote!(#krate::__private::invoke_batch_sync(args, #call)),
        )
    };
    let span = name.span();
    let registration = quote_spanned! {span=>
        const _: () = {
            #[#krate::__private::linkme::distributed_slice(#krate::__private::ENTRIES)]
            #[linkme(crate = #krate::__private::linkme)]
            static ENTRY: #krate::__private::EntryRecord = #krate::__private::EntryRecord {
                name: <#name as #krate::Entry>::NAME,
                invoke: |args: &[u8]| #invoke,
                invoke_batch: |args: #krate::__private::BatchArgs| #invoke_batch,
                is_async: #is_async,
            };
        };
    };
    quote! {
        #(#other_attrs)*
        #[allow(non_snake_case, clippy::needless_pass_by_value)]
        #[doc(hidden)]
        #vis #hidden_sig #block

        #(#doc_attrs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #(#cfgs)*
        #vis struct #name;

        #(#cfgs)*
        impl ::core::ops::Deref for #name {
            type Target = #target;
            fn deref(&self) -> &Self::Target {
                const F: #target = #pointer;
                &F
            }
        }

        #(#cfgs)*
        impl #krate::Entry for #name {
            type Args = #args_ty;
            type Output = #output;
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name));
        }

        #(#cfgs)*
        #registration
    }
}

fn expand_run(krate: &Path, item: ItemImpl) -> TokenStream {
    let trait_ok = item
        .trait_
        .as_ref()
        .and_then(|(bang, path, _)| {
            if bang.is_none() {
                path.segments.last()
            } else {
                None
            }
        })
        .is_some_and(|seg| seg.ident == "Run");
    if !trait_ok {
        let e = syn::Error::new_spanned(
            item.impl_token,
            "#[entry] on an impl block needs `impl multiprocessing::Run for YourType`",
        )
        .into_compile_error();
        return quote!(#item #e);
    }
    if !item.generics.params.is_empty() {
        let e = syn::Error::new_spanned(
            &item.generics,
            "a registered `Run` type cannot be generic: a child finds it by name; register each concrete type",
        )
        .into_compile_error();
        return quote!(#item #e);
    }
    let ty = &item.self_ty;
    quote! {
        #item

        impl #krate::__private::RegisteredRun for #ty {
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::<", ::core::stringify!(#ty), " as Run>");
        }

        const _: () = {
            #[#krate::__private::linkme::distributed_slice(#krate::__private::ENTRIES)]
            #[linkme(crate = #krate::__private::linkme)]
            static ENTRY: #krate::__private::EntryRecord = #krate::__private::EntryRecord {
                name: <#ty as #krate::__private::RegisteredRun>::NAME,
                invoke: |args: &[u8]| #krate::__private::invoke_sync(args, |value: #ty| <#ty as #krate::Run>::run(value)),
                invoke_batch: |args: #krate::__private::BatchArgs| #krate::__private::invoke_batch_sync(args, |value: #ty| <#ty as #krate::Run>::run(value)),
                is_async: false,
            };
        };
    }
}
