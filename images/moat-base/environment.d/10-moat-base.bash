# the seed volume is the only data source: no network metadata service is ever asked
export DIB_CLOUD_INIT_DATASOURCES=${DIB_CLOUD_INIT_DATASOURCES:-NoCloud}
