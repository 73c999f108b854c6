//! rep-resources: the `.res` configuration language.
