//! `#[actor]`: parse → validate → expand. See the attribute's docs in `lib.rs`.

use crate::entry::{crate_path, find_borrow, with_error};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, Pat, Path, ReturnType, Type, Visibility};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let krate = match crate_path(args, "actor") {
        Ok(k) => k,
        Err(e) => return with_error(item, e),
    };
    let mut imp = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(i) => i,
        Err(_) => {
            let e = syn::Error::new(
                Span::call_site(),
                "#[actor] applies to an inherent `impl YourType { .. }` block; its `pub` methods become the actor's messages",
            );
            return with_error(item, e);
        }
    };
    let (methods, hooks) = match collect(&mut imp) {
        Ok(m) => m,
        Err(e) => return with_error(quote!(#imp), e),
    };
    generate(&krate, &imp, &methods, &hook_fn(&krate, &hooks))
}

/// How a method is marked: `#[actor(skip)]`, `#[actor(on_start)]`, `#[actor(on_stop)]`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Skip,
    OnStart,
    OnStop,
}

/// A lifecycle hook: which, the method, and whether it is `async`.
struct HookFn {
    mark: Mark,
    name: syn::Ident,
    is_async: bool,
}

/// One message: a `pub` method taking `&self` or `&mut self`.
struct Method {
    sig: syn::Signature,
    vis: Visibility,
    docs: Vec<syn::Attribute>,
    args: Vec<(syn::Ident, Type)>,
    output: Type,
}

/// Takes the messages and hooks out of the impl (removing the `#[actor(..)]` marks); every
/// misuse becomes one error at its token.
fn collect(imp: &mut ItemImpl) -> syn::Result<(Vec<Method>, Vec<HookFn>)> {
    let mut errors: Vec<syn::Error> = Vec::new();
    if let Some((_, path, _)) = &imp.trait_ {
        errors.push(syn::Error::new_spanned(
            path,
            "#[actor] goes on an inherent impl (`impl Counter { .. }`), not on a trait impl",
        ));
    }
    if !imp.generics.params.is_empty() || imp.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &imp.generics,
            "an #[actor] type cannot be generic: its process finds it by name; write a non-generic struct (or a type alias with #[actor] on `impl Alias`) for each type you need",
        ));
    }
    let mut methods = Vec::new();
    let mut hooks: Vec<HookFn> = Vec::new();
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        match take_mark(f) {
            Some(Mark::Skip) => continue,
            Some(mark) => {
                match hook(f, mark) {
                    Ok(h) if hooks.iter().any(|o| o.mark == mark) => errors.push(syn::Error::new_spanned(
                        &h.name,
                        "an actor has at most one #[actor(on_start)] and one #[actor(on_stop)] method; call the others from it",
                    )),
                    Ok(h) => hooks.push(h),
                    Err(e) => errors.push(e),
                }
                continue;
            }
            None => {}
        }
        if matches!(f.vis, Visibility::Inherited) {
            continue;
        }
        match method(f) {
            Ok(Some(m)) => methods.push(m),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    match errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        Some(e) => Err(e),
        None => Ok((methods, hooks)),
    }
}

/// Removes the `#[actor(skip | on_start | on_stop)]` mark from `f`; which it was.
fn take_mark(f: &mut ImplItemFn) -> Option<Mark> {
    let mut mark = None;
    f.attrs.retain(|a| {
        if !a.path().is_ident("actor") {
            return true;
        }
        let found = match a.parse_args::<syn::Ident>() {
            Ok(i) if i == "skip" => Mark::Skip,
            Ok(i) if i == "on_start" => Mark::OnStart,
            Ok(i) if i == "on_stop" => Mark::OnStop,
            _ => return true,
        };
        mark = Some(found);
        false
    });
    mark
}

/// A hook method: `&self` or `&mut self` and nothing else; sync or `async`.
fn hook(f: &ImplItemFn, mark: Mark) -> syn::Result<HookFn> {
    let sig = &f.sig;
    let receiver_ok =
        matches!(sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some());
    if !receiver_ok || sig.inputs.len() != 1 || !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            sig,
            "an #[actor(on_start)] or #[actor(on_stop)] method takes only `&self` or `&mut self` (it runs in the actor's process, with no caller to give it arguments)",
        ));
    }
    Ok(HookFn {
        mark,
        name: sig.ident.clone(),
        is_async: sig.asyncness.is_some(),
    })
}

/// `Actor::__hook` for the hooks there are (the trait's default when there are none).
fn hook_fn(krate: &Path, hooks: &[HookFn]) -> TokenStream {
    if hooks.is_empty() {
        return TokenStream::new();
    }
    let arms = hooks.iter().map(|h| {
        let name = &h.name;
        let which = match h.mark {
            Mark::OnStart => quote!(Start),
            _ => quote!(Stop),
        };
        let call = if h.is_async {
            quote! {
                #krate::__private::ActorHandled::Pending(::std::boxed::Box::pin(async move {
                    let _ = self.#name().await;
                    ::core::result::Result::Ok(::std::vec::Vec::new())
                }))
            }
        } else {
            quote! {{
                let _ = self.#name();
                #krate::__private::ActorHandled::Done(::core::result::Result::Ok(::std::vec::Vec::new()))
            }}
        };
        quote!(#krate::__private::ActorHook::#which => #call,)
    });
    quote! {
        fn __hook(&mut self, hook: #krate::__private::ActorHook) -> #krate::__private::ActorHandled<'_> {
            #[allow(unreachable_patterns)]
            match hook {
                #(#arms)*
                _ => #krate::__private::ActorHandled::Done(::core::result::Result::Ok(::std::vec::Vec::new())),
            }
        }
    }
}

/// The message a `pub` method makes; `None` for an associated function (no `self`).
fn method(f: &ImplItemFn) -> syn::Result<Option<Method>> {
    let sig = &f.sig;
    let Some(FnArg::Receiver(receiver)) = sig.inputs.first() else {
        return Ok(None);
    };
    let mut errors: Vec<syn::Error> = Vec::new();
    if receiver.reference.is_none() {
        errors.push(syn::Error::new_spanned(
            receiver,
            "an #[actor] method takes `&self` or `&mut self`: the state stays in the actor's process; to get the state back, call `stop()` on the reference (or mark this method #[actor(skip)])",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "an #[actor] method cannot be generic: each message has one argument type; write one method per type (or mark it #[actor(skip)])",
        ));
    }
    let mut args = Vec::new();
    for (i, input) in sig.inputs.iter().skip(1).enumerate() {
        let FnArg::Typed(t) = input else { continue };
        if let Some(e) = borrowed(&t.ty) {
            errors.push(e);
        }
        let ident = match &*t.pat {
            Pat::Ident(p) => p.ident.clone(),
            _ => format_ident!("arg{}", i),
        };
        args.push((ident, (*t.ty).clone()));
    }
    let output = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            if let Some(e) = borrowed(ty) {
                errors.push(e);
            }
            (**ty).clone()
        }
    };
    if let Some(e) = errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        return Err(e);
    }
    let docs = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Some(Method {
        sig: sig.clone(),
        vis: f.vis.clone(),
        docs,
        args,
        output,
    }))
}

/// A reference or `impl Trait` in an argument or result cannot cross to another process.
fn borrowed(ty: &Type) -> Option<syn::Error> {
    let mut found = None;
    find_borrow(ty, &mut found);
    found.map(|(span, kind)| {
        let hint = match kind {
            "reference" => "take an owned type instead (`String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`)",
            "raw pointer" => "send the data it points to, as an owned value",
            _ => "name a concrete type that is Serialize + DeserializeOwned",
        };
        syn::Error::new(
            span,
            format!("an #[actor] message travels between processes by value, so its arguments and result cannot be a {kind}; {hint}"),
        )
    })
}

/// The widest visibility among the messages (`pub(crate)` when there are none).
fn widest(methods: &[Method]) -> TokenStream {
    let rank = |v: &Visibility| match v {
        Visibility::Public(_) => 3,
        Visibility::Restricted(r) if r.path.is_ident("crate") => 2,
        Visibility::Restricted(_) => 1,
        Visibility::Inherited => 0,
    };
    match methods.iter().map(|m| &m.vis).max_by_key(|v| rank(v)) {
        Some(v) => quote!(#v),
        None => quote!(pub(crate)),
    }
}

/// The lifecycle methods every reference gets, by name (a message of the same name wins).
fn helpers(krate: &Path, ty: &Type, vis: &TokenStream) -> Vec<(&'static str, TokenStream)> {
    vec![
        (
            "stop",
            quote! {
            /// Lets the actor finish the calls queued before this one, then ends it and returns
            /// its final state; see [`ActorRef::stop`](#krate::ActorRef::stop).
            ///
            /// # Cancel safety
            /// Once sent, the actor stops whether or not this is awaited.
            ///
            /// # Errors
            /// `ActorStopped` if it had ended already; `ProcessDied` if it died meanwhile.
            // Generic, with the one impl of `RefOf` pinning `S` to the state type: naming the
            // state type in the future's type would not compile where the struct is less
            // visible than its `pub` methods (a common shape).
            #vis async fn stop<S: #krate::Actor>(&self) -> #krate::Result<S>
            where
                Self: #krate::__private::RefOf<S>,
            {
                #krate::__private::RefOf::<S>::actor_ref(self).stop().await
            }
            },
        ),
        (
            "kill",
            quote! {
            /// Ends the actor now; see [`ActorRef::kill`](#krate::ActorRef::kill).
            ///
            /// # Cancel safety
            /// Cancel-safe: once the request has left, the actor ends.
            ///
            /// # Errors
            /// None in practice; an actor that is gone already is not an error.
            #vis async fn kill(&self) -> #krate::Result<()> {
                self.0.kill().await
            }
            },
        ),
        (
            "detach",
            quote! {
            /// Keeps the actor alive when no reference is left; see
            /// [`ActorRef::detach`](#krate::ActorRef::detach).
            ///
            /// # Cancel safety
            /// Cancel-safe.
            ///
            /// # Errors
            /// `ActorStopped` when the actor has ended.
            #vis async fn detach(&self) -> #krate::Result<()> {
                self.0.detach().await
            }
            },
        ),
        (
            "monitor",
            quote! {
            /// A future that resolves with how the actor ended; see
            /// [`ActorRef::monitor`](#krate::ActorRef::monitor).
            #vis fn monitor(&self) -> #krate::BoxFuture<#krate::ActorExit> {
                self.0.monitor()
            }
            },
        ),
        (
            "link",
            quote! {
            /// Links this actor with `other` (of any actor type): when either ends abnormally,
            /// the other's process is killed; see [`ActorRef::link`](#krate::ActorRef::link).
            ///
            /// # Cancel safety
            /// Cancel-safe.
            ///
            /// # Errors
            /// `ActorStopped` when either actor has ended; `Io`.
            #vis async fn link(&self, other: &(impl #krate::AnyActorRef + ?::core::marker::Sized)) -> #krate::Result<()> {
                self.0.link(other).await
            }
            },
        ),
        (
            "unlink",
            quote! {
            /// Removes the link between this actor and `other`, if there is one; see
            /// [`ActorRef::unlink`](#krate::ActorRef::unlink).
            ///
            /// # Cancel safety
            /// Cancel-safe.
            ///
            /// # Errors
            /// None in practice.
            #vis async fn unlink(&self, other: &(impl #krate::AnyActorRef + ?::core::marker::Sized)) -> #krate::Result<()> {
                self.0.unlink(other).await
            }
            },
        ),
        (
            "pid",
            quote! {
            /// The pid of the process serving the actor, as of this process's last connection
            /// to it.
            #vis fn pid(&self) -> ::core::option::Option<u32> {
                self.0.pid()
            }
            },
        ),
        (
            "as_actor_ref",
            quote! {
            /// The untyped-by-name reference inside.
            #vis fn as_actor_ref(&self) -> &#krate::ActorRef<#ty> {
                &self.0
            }
            },
        ),
    ]
}

fn generate(
    krate: &Path,
    imp: &ItemImpl,
    methods: &[Method],
    hook_fn: &TokenStream,
) -> TokenStream {
    let ty = &imp.self_ty;
    let Type::Path(type_path) = &**ty else {
        let e = syn::Error::new_spanned(ty, "#[actor] needs a named struct type (`impl Counter`)");
        return with_error(quote!(#imp), e);
    };
    let Some(last) = type_path.path.segments.last() else {
        return quote!(#imp);
    };
    let ref_ty = format_ident!("{}Ref", last.ident);
    let mut client_methods = Vec::new();
    let mut arms = Vec::new();
    let mut checks = Vec::new();
    for (index, m) in methods.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let name = &m.sig.ident;
        let nowait = format_ident!("{}_nowait", name);
        let vis = &m.vis;
        let docs = &m.docs;
        let vars: Vec<_> = m.args.iter().map(|(v, _)| v).collect();
        let types: Vec<_> = m.args.iter().map(|(_, t)| t).collect();
        let output = &m.output;
        for t in types.iter().copied().chain(std::iter::once(output)) {
            checks.push(quote_spanned! {t.span()=>
                #krate::__private::actor_assert_serde::<#t>();
            });
        }
        let tell_doc = format!(
            "Sends `{name}` without waiting for its result: resolves once the message is sent (after waiting for a mailbox slot). It runs in order with this process's other calls unless the actor ends first; its result and any error it returns are dropped.\n\n# Cancel safety\nDropped before it resolves, nothing was sent.\n\n# Errors\n[`Error::ActorStopped`]({krate}::Error::ActorStopped) when the actor has ended.",
            krate = quote!(#krate).to_string().replace(' ', "")
        );
        client_methods.push(quote! {
            #(#docs)*
            ///
            /// Runs in the actor's process; see the actor's docs for ordering and failures.
            ///
            /// # Cancel safety
            /// Dropped before it was sent, nothing is sent; after, the reply is discarded.
            ///
            /// # Errors
            /// `ActorStopped` when the actor has ended, `ProcessDied` when its process died
            /// during the call, `Panicked` when the method panicked.
            #vis async fn #name(&self #(, #vars: #types)*) -> #krate::Result<#output> {
                self.0.__call(#index, &(#(#vars,)*)).await
            }

            #[doc = #tell_doc]
            #vis async fn #nowait(&self #(, #vars: #types)*) -> #krate::Result<()> {
                self.0.__tell(#index, &(#(#vars,)*)).await
            }
        });
        let call = if m.sig.asyncness.is_some() {
            quote! {
                #krate::__private::ActorHandled::Pending(::std::boxed::Box::pin(async move {
                    #krate::__private::actor_encode_result(&self.#name(#(#vars),*).await)
                }))
            }
        } else {
            quote! {
                #krate::__private::ActorHandled::Done(#krate::__private::actor_encode_result(&self.#name(#(#vars),*)))
            }
        };
        arms.push(quote! {
            #index => match #krate::__private::actor_decode_args::<(#(#types,)*)>(args) {
                ::core::result::Result::Ok((#(#vars,)*)) => #call,
                ::core::result::Result::Err(e) => #krate::__private::ActorHandled::Done(::core::result::Result::Err(e)),
            },
        });
    }
    // As visible as the most visible message: a reference no caller can name is no use.
    let vis = widest(methods);
    let taken: Vec<String> = methods.iter().map(|m| m.sig.ident.to_string()).collect();
    let helpers = helpers(krate, ty, &vis)
        .into_iter()
        .filter(|(name, _)| !taken.iter().any(|t| t == name))
        .map(|(_, tokens)| tokens);
    let ref_doc = format!(
        "A reference to a `{0}` actor: its async methods run in the actor's process. Clone it, serialize it, hand it to any process of the run. Made by `{0}::spawn`, `{0}::builder`, or [`{1}::lookup`].",
        last.ident, ref_ty
    );
    quote! {
        #imp

        #[doc = #ref_doc]
        #[derive(Clone, Debug)]
        #vis struct #ref_ty(#krate::ActorRef<#ty>);

        impl #krate::__private::RefOf<#ty> for #ref_ty {
            fn actor_ref(&self) -> &#krate::ActorRef<#ty> {
                &self.0
            }
        }

        impl #krate::AnyActorRef for #ref_ty {
            fn __actor_socket(&self) -> &::std::path::Path {
                #krate::AnyActorRef::__actor_socket(&self.0)
            }
        }

        impl ::core::convert::From<#krate::ActorRef<#ty>> for #ref_ty {
            fn from(r: #krate::ActorRef<#ty>) -> Self {
                #ref_ty(r)
            }
        }

        impl #krate::__private::serde::Serialize for #ref_ty {
            fn serialize<S: #krate::__private::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                #krate::__private::serde::Serialize::serialize(&self.0, s)
            }
        }

        impl<'de> #krate::__private::serde::Deserialize<'de> for #ref_ty {
            fn deserialize<D: #krate::__private::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                <#krate::ActorRef<#ty> as #krate::__private::serde::Deserialize<'de>>::deserialize(d).map(#ref_ty)
            }
        }

        impl #ref_ty {
            /// Finds the actor registered under `name` from any process of the run.
            ///
            /// # Cancel safety
            /// Cancel-safe.
            ///
            /// # Errors
            /// `NoSuchActor` when no actor of this type has that name.
            pub async fn lookup(name: &str) -> #krate::Result<Self> {
                #krate::ActorRef::<#ty>::lookup(name).await
            }

            #(#client_methods)*

            #(#helpers)*
        }

        impl #ty {
            /// Starts this value as an actor in a child process of its own, with the default
            /// options (see `builder`).
            ///
            /// # Cancel safety
            /// Not cancel-safe: dropped midway, a started process runs until the launch ends.
            ///
            /// # Errors
            /// As `multiprocessing::ActorBuilder::spawn`.
            pub async fn spawn(self) -> #krate::Result<#ref_ty> {
                #krate::ActorBuilder::new(self).spawn().await
            }

            /// A builder to name the actor, size its mailbox or set its restart policy.
            pub fn builder(self) -> #krate::ActorBuilder<#ty> {
                #krate::ActorBuilder::new(self)
            }
        }

        impl #krate::Actor for #ty {
            type Ref = #ref_ty;
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::<", ::core::stringify!(#ty), " as Actor>");
            fn __handle<'a>(&'a mut self, method: u32, args: &'a [u8]) -> #krate::__private::ActorHandled<'a> {
                match method {
                    #(#arms)*
                    _ => #krate::__private::ActorHandled::Done(::core::result::Result::Err(
                        #krate::__private::actor_unknown_method(method),
                    )),
                }
            }
            #hook_fn
        }

        const _: () = {
            #[allow(dead_code)]
            fn __check() {
                #(#checks)*
            }

            #[#krate::__private::linkme::distributed_slice(#krate::__private::ENTRIES)]
            #[linkme(crate = #krate::__private::linkme)]
            static ENTRY: #krate::__private::EntryRecord = #krate::__private::EntryRecord {
                name: <#ty as #krate::Actor>::NAME,
                invoke: #krate::__private::actor_invoke::<#ty>,
                invoke_batch: #krate::__private::actor_invoke_batch::<#ty>,
                is_async: false,
            };
        };
    }
}
