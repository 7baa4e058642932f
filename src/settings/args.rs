//! The run options on the command line, generated from the settings table: one flag per
//! setting, every one optional so that the environment, the config file and the saved run can
//! fill what the command line leaves out. The help text is the table's, with its default.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{help, parse_duration, parse_words};
use crate::schema::{Provider, default_focus, run_settings};

macro_rules! run_args {
    (
        saved { $(
            $(#[doc = $doc:literal])*
            $name:ident: $ty:ty => $fty:ty {
                arg: [$($arg:tt)*],
                file: [$($file:tt)*],
                saved: [$($saved:tt)*],
                default: $default:expr,
                hook: $hook:ident,
            }
        )* }
        invocation { $(
            $(#[doc = $idoc:literal])*
            $iname:ident: $ity:ty => $ifty:ty {
                arg: [$($iarg:tt)*],
                file: [$($ifile:tt)*],
                default: $idefault:expr,
                hook: $ihook:ident,
            }
        )* }
    ) => {
        /// Options of a run (see the settings table in schema/settings.rs).
        #[derive(Debug, Clone, Default, Args)]
        pub struct RunArgs {
            $(
                #[arg($($iarg)*, help = help(&[$($idoc),*], {
                    let d: Option<$ity> = $idefault;
                    d
                }))]
                pub $iname: Option<$ity>,
            )*
            $(
                #[arg($($arg)*, help = help(&[$($doc),*], {
                    let d: Option<$ty> = $default;
                    d
                }))]
                pub $name: Option<$ty>,
            )*
        }
    };
}

run_settings!(run_args);
