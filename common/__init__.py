"""What every service of the suite shares: domain types, errors, configuration,
logging, server bootstrap, shared-memory audio handles and proto conversions."""
