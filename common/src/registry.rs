//! (being written on the `registry` branch; this minimal id type lets the bus contract compile)

/// Placeholder until the registry lands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IntegrationId(String);

impl IntegrationId {
    /// The id as a subject token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IntegrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IntegrationId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
